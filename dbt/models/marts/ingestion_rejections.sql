-- Per tenant and class of reason: records the ingestion refused (a record refused for two
-- reasons counts under both).

with

reasons as (

    select * from {{ ref('int_ingestion_rejection_reasons') }}

),

counted as (

    select
        tenant_id,
        reason,
        count(distinct error_id) as rejections,
        count(distinct job_id) as jobs,
        min(rejected_at) as first_rejected_at,
        max(rejected_at) as last_rejected_at
    from reasons
    group by
        tenant_id,
        reason

)

select * from counted
