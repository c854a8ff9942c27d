-- One row per question asked (single queries and batch members; batch envelopes excluded).
-- Incremental: each run reads only the audit rows past the highest audit_id already loaded
-- (less a lookback window, see dbt_project.yml), so a build costs what was written since.
{{
    config(
        materialized='incremental',
        unique_key='request_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns'
    )
}}

with

audit as (

    select * from {{ ref('stg_rag__audit_log') }}
    where
        kind in ('query', 'sub_query')
        and audit_id > {{ audit_watermark() }}

),

prices as (

    select * from {{ ref('model_prices') }}

),

questions as (

    select
        audit.audit_id,
        audit.request_id,
        audit.tenant_id,
        audit.occurred_at,
        audit.occurred_on,
        audit.kind,
        audit.parent_request_id as batch_request_id,
        audit.model,
        audit.prompt_version,
        coalesce(audit.rollout_cohort, 'none') as rollout_cohort,
        audit.retrieved_chunks,
        audit.prompt_tokens,
        audit.completion_tokens,
        audit.prompt_tokens + audit.completion_tokens as total_tokens,
        {{ token_cost('audit.prompt_tokens', 'audit.completion_tokens', 'price') }}
            as cost_usd,
        audit.latency_total_ms,
        audit.latency_llm_ms,
        audit.latency_search_ms,
        audit.cache_hit,
        audit.latency_cache_ms is not null as cache_looked_up,
        audit.retries,
        audit.breaker_state,
        audit.error_code,
        audit.error_code is not null as is_error,
        -- The call that carried the question to the LLM (questions of one call share it);
        -- NULL for questions that never reached the answer stage or an answerer without LLM.
        case
            when
                audit.latency_llm_ms is not null
                and coalesce(audit.model, '') not in (
                    {%- for model in var('non_llm_models') %}
                        '{{ model }}'{{ ',' if not loop.last }}
                    {%- endfor %}
                )
                then audit.batch_id
        end as llm_call_id,
        audit.has_quota_debt
    from audit
    left join prices as price
        on audit.model = price.model

)

select * from questions
