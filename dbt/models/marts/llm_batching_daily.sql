-- Per UTC day: LLM calls, the questions they carried, and the calls that batching (up to 5
-- questions per call) saved against one call per question. A call is the answer step's
-- batch (its id in the audit row's batch_id); retries of a question alone after a failed
-- batch call are not in the audit log, so llm_calls is a lower bound on the calls sent.

with

questions as (

    select * from {{ ref('fct_questions') }}
    where llm_call_id is not null

),

daily as (

    select
        occurred_on,
        count(distinct llm_call_id) as llm_calls,
        count(*) as questions_answered
    from questions
    group by occurred_on

),

saved as (

    select
        occurred_on,
        llm_calls,
        questions_answered,
        cast(questions_answered as double precision) / llm_calls as questions_per_call,
        questions_answered - llm_calls as calls_saved
    from daily

)

select * from saved
