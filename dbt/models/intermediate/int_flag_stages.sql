-- One row per stage of each flag's rollout: a run of consecutive flag events at the same
-- percentage (a gate holding a stage records an event but starts no new stage), from its
-- first event to the first event at another percentage (NULL: still in force).

with

events as (

    select * from {{ ref('stg_rag__feature_flag_events') }}

),

previous as (

    select
        flag_key,
        event_id,
        occurred_at,
        rollout_percent,
        lag(rollout_percent) over (
            partition by flag_key order by occurred_at, event_id
        ) as previous_percent
    from events

),

changes as (

    select
        flag_key,
        event_id,
        occurred_at,
        rollout_percent,
        case
            when previous_percent is null or previous_percent != rollout_percent then 1
            else 0
        end as starts_stage
    from previous

),

numbered as (

    select
        flag_key,
        occurred_at,
        rollout_percent,
        sum(starts_stage) over (
            partition by flag_key order by occurred_at, event_id
        ) as stage_number
    from changes

),

stages as (

    select
        flag_key,
        stage_number,
        min(rollout_percent) as stage_percent,
        min(occurred_at) as stage_started_at
    from numbered
    group by
        flag_key,
        stage_number

),

bounded as (

    select
        flag_key,
        stage_number,
        stage_percent,
        stage_started_at,
        lead(stage_started_at) over (
            partition by flag_key order by stage_number
        ) as stage_ended_at
    from stages

)

select * from bounded
