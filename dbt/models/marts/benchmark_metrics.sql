-- One row per run and numeric metric it recorded (retrieval: ndcg@10, recall@10, ...;
-- answers: each metric's score), for comparing runs on any metric.

with

runs as (

    select * from {{ ref('stg_rag__benchmark_runs') }}

),

metrics as (

    select
        runs.run_id,
        runs.benchmark,
        runs.dataset,
        runs.split,
        runs.started_at,
        metric.key as metric,
        cast(metric.value as double precision) as score
    from runs
    cross join lateral jsonb_each(runs.metrics) as metric
    where jsonb_typeof(metric.value) = 'number'

)

select * from metrics
