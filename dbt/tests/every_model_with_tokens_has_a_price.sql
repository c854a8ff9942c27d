{#- Tokens spent on a model the model_prices seed has no row for: their cost is NULL in
    token_cost_daily (and tenant_daily_usage). A warning, so the build still publishes the
    rest; add the model's price to seeds/model_prices.csv. -#}
{{ config(severity='warn') }}

select
    model,
    sum(total_tokens) as unpriced_tokens
from {{ ref('token_cost_daily') }}
where cost_usd is null
group by model
