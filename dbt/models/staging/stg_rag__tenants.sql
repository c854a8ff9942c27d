with

source as (

    select * from {{ source('rag', 'tenants') }}

),

renamed as (

    select
        cast(tenant_id as text) as tenant_id,
        display_name,
        corpus_version,
        created_at
    from source

)

select * from renamed
