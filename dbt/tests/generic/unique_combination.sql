{#- Fails on every combination of the columns that occurs more than once: a mart's grain.
    NULLs compare equal here (GROUP BY), so a NULL key cannot hide a duplicate. Written here
    rather than taken from dbt_utils: packages download at `dbt deps`, and nothing may. -#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
