-- Per UTC day and typed error code (rag_core.codes.ErrorCode): failed questions and their
-- share of the day's questions (all tenants).

with

questions as (

    select * from {{ ref('fct_questions') }}

),

totals as (

    select
        occurred_on,
        count(*) as questions
    from questions
    group by occurred_on

),

errors as (

    select
        occurred_on,
        error_code,
        count(*) as errors
    from questions
    where error_code is not null
    group by
        occurred_on,
        error_code

),

rates as (

    select
        errors.occurred_on,
        errors.error_code,
        errors.errors,
        totals.questions,
        cast(errors.errors as double precision) / totals.questions as error_rate
    from errors
    inner join totals on errors.occurred_on = totals.occurred_on

)

select * from rates
