-- Per tenant and UTC day: answers served from the answer cache.

with

questions as (

    select * from {{ ref('fct_questions') }}

),

daily as (

    select
        tenant_id,
        occurred_on,
        count(*) as questions,
        count(*) filter (where cache_looked_up) as cache_lookups,
        count(*) filter (where cache_hit) as cache_hits,
        cast(count(*) filter (where cache_hit) as double precision) / count(*)
            as cache_hit_ratio
    from questions
    group by
        tenant_id,
        occurred_on

)

select * from daily
