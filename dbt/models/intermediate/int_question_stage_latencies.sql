-- One row per question and stage it went through, with the stage's time: the keys of the
-- audit row's latency_ms (total, cache, embed, search, redact_passages, llm, answer_stage;
-- a new stage the query path times appears here by itself). Incremental like fct_questions.
{{
    config(
        materialized='incremental',
        unique_key=['request_id', 'stage'],
        incremental_strategy='delete+insert'
    )
}}

with

audit as (

    select * from {{ ref('stg_rag__audit_log') }}
    where
        kind in ('query', 'sub_query')
        and audit_id > {{ audit_watermark() }}

),

stages as (

    select
        audit.audit_id,
        audit.request_id,
        audit.tenant_id,
        audit.occurred_at,
        audit.occurred_on,
        stage_timing.key as stage,
        cast(stage_timing.value as double precision) as latency_ms
    from audit
    cross join lateral jsonb_each(audit.latency_ms) as stage_timing
    where jsonb_typeof(stage_timing.value) = 'number'

)

select * from stages
