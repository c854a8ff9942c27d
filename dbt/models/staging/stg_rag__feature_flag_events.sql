with

source as (

    select * from {{ source('rag', 'feature_flag_events') }}

),

renamed as (

    select
        event_id,
        flag_key,
        action,
        state,
        rollout_percent,
        enabled,
        actor,
        occurred_at
    from source

)

select * from renamed
