with

source as (

    select * from {{ source('rag', 'audit_log') }}

),

renamed as (

    select
        audit_id,
        request_id,
        parent_request_id,
        cast(tenant_id as text) as tenant_id,
        kind,
        occurred_at,
        cast(occurred_at at time zone 'UTC' as date) as occurred_on,
        batch_id,
        model,
        prompt_version,
        cardinality(chunk_ids) as retrieved_chunks,
        prompt_tokens,
        completion_tokens,
        latency_ms,
        cast(latency_ms ->> 'total' as double precision) as latency_total_ms,
        cast(latency_ms ->> 'llm' as double precision) as latency_llm_ms,
        cast(latency_ms ->> 'search' as double precision) as latency_search_ms,
        cast(latency_ms ->> 'cache' as double precision) as latency_cache_ms,
        cache_hit,
        retries,
        breaker_state,
        error_code,
        rollout_cohort,
        quota_debt is not null as has_quota_debt
    from source

)

select * from renamed
