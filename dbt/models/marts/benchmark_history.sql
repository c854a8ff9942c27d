-- One row per recorded evaluation run with what it ran with and its main scores. `rag eval
-- retrieval` and `rag eval answers` name their settings differently in config; the columns
-- take whichever the run has. Every numeric metric, by name: benchmark_metrics.

with

runs as (

    select * from {{ ref('stg_rag__benchmark_runs') }}

),

unpacked as (

    select
        run_id,
        benchmark,
        dataset,
        split,
        mode,
        started_at,
        finished_at,
        cast(extract(epoch from finished_at - started_at) as double precision) as seconds,
        git_commit,
        config ->> 'prompt_version' as prompt_version,
        config ->> 'model' as model,
        coalesce(config ->> 'retrieval_mode', nullif(mode, '')) as retrieval_mode,
        coalesce(config ->> 'embedding_model_key', config ->> 'model_key')
            as embedding_version,
        case
            when config ? 'model_id'
                then concat_ws('@', config ->> 'model_id', config ->> 'model_version')
        end as embedding_model,
        config ->> 'answerer' as answerer,
        case
            when jsonb_typeof(metrics -> 'ndcg@10') = 'number'
                then cast(metrics -> 'ndcg@10' as double precision)
        end as ndcg_at_10,
        case
            when jsonb_typeof(metrics -> 'recall@10') = 'number'
                then cast(metrics -> 'recall@10' as double precision)
        end as recall_at_10,
        case
            when jsonb_typeof(metrics -> 'recall@100') = 'number'
                then cast(metrics -> 'recall@100' as double precision)
        end as recall_at_100,
        case
            when jsonb_typeof(metrics -> 'mrr@10') = 'number'
                then cast(metrics -> 'mrr@10' as double precision)
        end as mrr_at_10
    from runs

)

select * from unpacked
