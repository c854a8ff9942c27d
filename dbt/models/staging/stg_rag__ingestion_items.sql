with

source as (

    select * from {{ source('rag', 'ingestion_items') }}

),

renamed as (

    select
        job_id,
        item_no,
        cast(tenant_id as text) as tenant_id,
        status,
        attempts,
        chunk_count,
        document_id,
        updated_at
    from source

)

select * from renamed
