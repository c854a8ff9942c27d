with

source as (

    select * from {{ source('rag', 'ingestion_errors') }}

),

renamed as (

    select
        error_id,
        job_id,
        cast(tenant_id as text) as tenant_id,
        line_no,
        reason,
        created_at as rejected_at,
        cast(created_at at time zone 'UTC' as date) as rejected_on
    from source

)

select * from renamed
