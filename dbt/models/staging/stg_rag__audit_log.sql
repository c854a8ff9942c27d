with

source as (

    select * from {{ source('rag', 'audit_log') }}

),

renamed as (

    select
        audit_id,
        request_id,
        parent_request_id,
        tenant_id::text as tenant_id,
        kind,
        occurred_at,
        cast(occurred_at at time zone 'UTC' as date) as occurred_on,
        session_hash,
        batch_id,
        question_hash,
        model,
        prompt_version,
        cardinality(chunk_ids) as retrieved_chunks,
        prompt_tokens,
        completion_tokens,
        prompt_tokens + completion_tokens as total_tokens,
        cast(latency_ms ->> 'total' as double precision) as latency_total_ms,
        cast(latency_ms ->> 'llm' as double precision) as latency_llm_ms,
        cast(latency_ms ->> 'search' as double precision) as latency_search_ms,
        cache_hit,
        retries,
        breaker_state,
        error_code,
        error_code is not null as is_error,
        coalesce(rollout_cohort, 'none') as rollout_cohort
    from source

)

select * from renamed
