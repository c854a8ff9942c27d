-- One row per question asked (single queries and batch members; batch envelopes excluded).

with

audit as (

    select * from {{ ref('stg_rag__audit_log') }}

),

questions as (

    select
        request_id,
        tenant_id,
        occurred_at,
        occurred_on,
        kind,
        parent_request_id as batch_request_id,
        model,
        prompt_version,
        rollout_cohort,
        retrieved_chunks,
        prompt_tokens,
        completion_tokens,
        total_tokens,
        total_tokens * {{ var('usd_per_million_tokens', 0.10) }} / 1000000.0 as cost_usd,
        latency_total_ms,
        latency_llm_ms,
        latency_search_ms,
        cache_hit,
        retries,
        breaker_state,
        error_code,
        is_error
    from audit
    where kind in ('query', 'sub_query')

)

select * from questions
