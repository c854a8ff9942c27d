-- One row per question and flag being rolled out when it was asked: the audit row's
-- rollout_cohort ("hybrid-v2=canary,other-flag=control", rag_core.db.flag_cohorts
-- cohort_label) split into (flag_key, cohort). Questions asked while no rollout was under
-- way carry no label and have no row here.

with

questions as (

    select * from {{ ref('fct_questions') }}
    where rollout_cohort != 'none'

),

labels as (

    select
        questions.request_id,
        questions.tenant_id,
        questions.occurred_at,
        questions.is_error,
        questions.latency_total_ms,
        questions.cache_hit,
        questions.total_tokens,
        split_part(cohort_label.flag_cohort, '=', 1) as flag_key,
        split_part(cohort_label.flag_cohort, '=', 2) as cohort
    from questions
    cross join
        lateral unnest(string_to_array(questions.rollout_cohort, ',')) as cohort_label (flag_cohort)

)

select * from labels
