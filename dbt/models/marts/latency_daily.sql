-- Per UTC day and stage of the query path: how many questions went through it and its
-- latency percentiles (continuous: interpolated between the two nearest questions).

with

stages as (

    select * from {{ ref('int_question_stage_latencies') }}

),

daily as (

    select
        occurred_on,
        stage,
        count(*) as requests,
        percentile_cont(0.50) within group (order by latency_ms) as p50_ms,
        percentile_cont(0.95) within group (order by latency_ms) as p95_ms,
        percentile_cont(0.99) within group (order by latency_ms) as p99_ms
    from stages
    group by
        occurred_on,
        stage

)

select * from daily
