-- Per tenant and UTC day: volume, tokens and cost, p95 latency, cache hit ratio, error rate.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

costs as (

    select
        tenant_id,
        occurred_on,
        -- NULL when any model of the day has no price: a partial sum would look complete.
        case when bool_and(cost_usd is not null) then sum(cost_usd) end as cost_usd
    from {{ ref('token_cost_daily') }}
    group by
        tenant_id,
        occurred_on

),

daily as (

    select
        tenant_id,
        occurred_on,
        count(*) as questions,
        sum(total_tokens) as total_tokens,
        sum(prompt_tokens) as prompt_tokens,
        sum(completion_tokens) as completion_tokens,
        percentile_cont(0.95) within group (order by latency_total_ms) as p95_latency_ms,
        cast(avg(case when cache_hit then 1.0 else 0.0 end) as double precision)
            as cache_hit_ratio,
        cast(avg(case when is_error then 1.0 else 0.0 end) as double precision) as error_rate,
        sum(retries) as llm_retries
    from questions
    group by
        tenant_id,
        occurred_on

),

joined as (

    select
        daily.tenant_id,
        daily.occurred_on,
        daily.questions,
        daily.total_tokens,
        daily.prompt_tokens,
        daily.completion_tokens,
        costs.cost_usd,
        daily.p95_latency_ms,
        daily.cache_hit_ratio,
        daily.error_rate,
        daily.llm_retries
    from daily
    left join costs
        on
            daily.tenant_id = costs.tenant_id
            and daily.occurred_on = costs.occurred_on

)

select * from joined
