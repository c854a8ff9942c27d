-- Per flag, stage of its rollout and cohort: what a canary check compares before moving the
-- flag on. Canary rows carry their difference to the control cohort of the same stage.

with

questions as (

    select * from {{ ref('int_rollout_questions') }}

),

cohorts as (

    select
        flag_key,
        stage_number,
        stage_percent,
        stage_started_at,
        stage_ended_at,
        cohort,
        count(*) as questions,
        count(*) filter (where is_error) as errors,
        cast(avg(case when is_error then 1.0 else 0.0 end) as double precision) as error_rate,
        percentile_cont(0.50) within group (order by latency_total_ms) as p50_latency_ms,
        percentile_cont(0.95) within group (order by latency_total_ms) as p95_latency_ms,
        cast(avg(case when cache_hit then 1.0 else 0.0 end) as double precision)
            as cache_hit_ratio,
        cast(avg(total_tokens) as double precision) as avg_tokens,
        min(occurred_at) as first_question_at,
        max(occurred_at) as last_question_at
    from questions
    group by
        flag_key,
        stage_number,
        stage_percent,
        stage_started_at,
        stage_ended_at,
        cohort

),

compared as (

    select
        cohorts.flag_key,
        cohorts.stage_number,
        cohorts.stage_percent,
        cohorts.stage_started_at,
        cohorts.stage_ended_at,
        cohorts.cohort,
        cohorts.questions,
        cohorts.errors,
        cohorts.error_rate,
        cohorts.p50_latency_ms,
        cohorts.p95_latency_ms,
        cohorts.cache_hit_ratio,
        cohorts.avg_tokens,
        cohorts.first_question_at,
        cohorts.last_question_at,
        control.questions as control_questions,
        cohorts.error_rate - control.error_rate as error_rate_minus_control,
        cohorts.p50_latency_ms - control.p50_latency_ms as p50_latency_ms_minus_control,
        cohorts.p95_latency_ms - control.p95_latency_ms as p95_latency_ms_minus_control,
        cohorts.cache_hit_ratio - control.cache_hit_ratio as cache_hit_ratio_minus_control
    from cohorts
    left join cohorts as control
        on
            cohorts.cohort = 'canary'
            and control.cohort = 'control'
            and cohorts.flag_key = control.flag_key
            and cohorts.stage_number is not distinct from control.stage_number

)

select * from compared
