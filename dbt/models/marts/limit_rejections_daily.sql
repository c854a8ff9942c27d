-- Per tenant and UTC day: questions refused by the rate limit and by the daily token quota.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

daily as (

    select
        tenant_id,
        occurred_on,
        count(*) as questions,
        count(*) filter (where error_code = 'rate_limited') as rate_limited,
        count(*) filter (where error_code = 'quota_exceeded') as quota_exceeded
    from questions
    group by
        tenant_id,
        occurred_on

)

select * from daily
