-- Every tenant the analytics know of: the tenants that exist now, and the tenant ids audit
-- rows name that do not exist (any more): questions for a deleted tenant are refused with
-- unknown_tenant and audited, and spooled rows may be replayed after a deletion.

with

tenants as (

    select * from {{ ref('stg_rag__tenants') }}

),

asked as (

    select
        tenant_id,
        min(occurred_at) as first_question_at,
        max(occurred_at) as last_question_at
    from {{ ref('fct_questions') }}
    group by tenant_id

),

combined as (

    select
        coalesce(tenants.tenant_id, asked.tenant_id) as tenant_id,
        tenants.display_name,
        tenants.created_at,
        tenants.tenant_id is null as is_deleted,
        asked.first_question_at,
        asked.last_question_at
    from tenants
    full outer join asked on tenants.tenant_id = asked.tenant_id

)

select * from combined
