{#- Fails on every row where one of `columns` is below zero (token counts, costs, times,
    counts). One query per model rather than one per column: a build runs every test, and
    each costs a round trip. -#}
{% test non_negative(model, columns) %}

select {{ columns | join(', ') }}
from {{ model }}
where
    {% for column in columns -%}
        {{ column }} < 0{{ ' or' if not loop.last }}
    {% endfor %}

{% endtest %}
