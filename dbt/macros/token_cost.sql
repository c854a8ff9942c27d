{#- The USD cost of prompt and completion tokens at a price row of the model_prices seed
    joined as `price`: 0 for no tokens, NULL when tokens were spent on a model the seed has
    no price for (unknown, never silently free). Computed in numeric (exact), returned as
    double precision like the marts' other measures. -#}
{% macro token_cost(prompt_tokens, completion_tokens, price='price') %}
    case
        when {{ prompt_tokens }} + {{ completion_tokens }} = 0 then 0
        when {{ price }}.model is not null
            then cast(
                (
                    {{ prompt_tokens }} * {{ price }}.usd_per_million_prompt_tokens
                    + {{ completion_tokens }} * {{ price }}.usd_per_million_completion_tokens
                ) / 1000000 as double precision
            )
    end
{% endmacro %}
