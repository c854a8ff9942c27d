-- Per rollout cohort and UTC day: what a canary check compares before moving a flag on.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

cohorts as (

    select
        rollout_cohort,
        occurred_on,
        count(*) as questions,
        cast(avg(case when is_error then 1.0 else 0.0 end) as double precision) as error_rate,
        percentile_cont(0.95) within group (order by latency_total_ms) as p95_latency_ms,
        cast(avg(case when cache_hit then 1.0 else 0.0 end) as double precision) as cache_hit_ratio,
        avg(total_tokens) as avg_tokens
    from questions
    group by
        rollout_cohort,
        occurred_on

)

select * from cohorts
