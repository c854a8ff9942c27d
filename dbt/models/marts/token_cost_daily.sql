-- Per tenant, model and UTC day: tokens and their cost at the model_prices seed's prices
-- (as they are now: a changed price re-prices history at the next build). Questions that
-- reached no model (refused, failed before the answer) are under model 'none', with 0 tokens.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

prices as (

    select * from {{ ref('model_prices') }}

),

daily as (

    select
        tenant_id,
        coalesce(model, 'none') as model,
        occurred_on,
        count(*) as questions,
        sum(prompt_tokens) as prompt_tokens,
        sum(completion_tokens) as completion_tokens,
        sum(total_tokens) as total_tokens
    from questions
    group by
        tenant_id,
        coalesce(model, 'none'),
        occurred_on

),

priced as (

    select
        daily.tenant_id,
        daily.model,
        daily.occurred_on,
        daily.questions,
        daily.prompt_tokens,
        daily.completion_tokens,
        daily.total_tokens,
        price.model is not null as price_known,
        {{ token_cost('daily.prompt_tokens', 'daily.completion_tokens', 'price') }}
            as cost_usd
    from daily
    left join prices as price on daily.model = price.model

)

select * from priced
