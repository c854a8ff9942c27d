with

source as (

    select * from {{ source('rag', 'feature_flags') }}

),

renamed as (

    select
        flag_key,
        state,
        rollout_percent,
        stages,
        variant,
        description,
        created_at,
        updated_at
    from source

)

select * from renamed
