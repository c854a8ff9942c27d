-- Per tenant and UTC day: questions asked, how many came as members of a batch, and batches.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

daily as (

    select
        tenant_id,
        occurred_on,
        count(*) as questions,
        count(*) filter (where kind = 'sub_query') as sub_questions,
        count(distinct batch_request_id) filter (where kind = 'sub_query') as batches
    from questions
    group by
        tenant_id,
        occurred_on

)

select * from daily
