-- Per tenant and UTC day: volume, tokens and cost, p95 latency, cache hit ratio, error rate.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

daily as (

    select
        tenant_id,
        occurred_on,
        count(*) as questions,
        sum(total_tokens) as total_tokens,
        sum(prompt_tokens) as prompt_tokens,
        sum(completion_tokens) as completion_tokens,
        sum(cost_usd) as cost_usd,
        percentile_cont(0.95) within group (order by latency_total_ms) as p95_latency_ms,
        cast(avg(case when cache_hit then 1.0 else 0.0 end) as double precision) as cache_hit_ratio,
        cast(avg(case when is_error then 1.0 else 0.0 end) as double precision) as error_rate,
        sum(retries) as llm_retries
    from questions
    group by
        tenant_id,
        occurred_on

)

select * from daily
