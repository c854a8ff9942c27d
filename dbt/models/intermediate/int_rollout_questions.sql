-- Each question of a rollout with the stage in force when it was asked (an interval join on
-- the flag's history). A question whose flag has no history (deleted since) keeps a NULL
-- stage. The query path reads flags through a short cache (RAG_FLAG_CACHE_TTL_S), so a
-- question asked within that time after a move may still have been routed at the old stage.

with

cohorts as (

    select * from {{ ref('int_question_cohorts') }}

),

stages as (

    select * from {{ ref('int_flag_stages') }}

),

joined as (

    select
        cohorts.request_id,
        cohorts.tenant_id,
        cohorts.occurred_at,
        cohorts.flag_key,
        cohorts.cohort,
        stages.stage_number,
        stages.stage_percent,
        stages.stage_started_at,
        stages.stage_ended_at,
        cohorts.is_error,
        cohorts.latency_total_ms,
        cohorts.cache_hit,
        cohorts.total_tokens
    from cohorts
    left join stages
        on
            cohorts.flag_key = stages.flag_key
            and cohorts.occurred_at >= stages.stage_started_at
            and (stages.stage_ended_at is null or cohorts.occurred_at < stages.stage_ended_at)

)

select * from joined
