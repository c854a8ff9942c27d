with

source as (

    select * from {{ source('rag', 'ingestion_jobs') }}

),

renamed as (

    select
        job_id,
        cast(tenant_id as text) as tenant_id,
        model_key,
        status,
        cast(counts ->> 'read' as integer) as records_read,
        cast(counts ->> 'rejected' as integer) as records_rejected,
        created_at,
        started_at,
        finished_at,
        cast(coalesce(started_at, created_at) at time zone 'UTC' as date) as started_on
    from source

)

select * from renamed
