-- Undo 0012: flags lose their stages, variants, cohorts and state (the 0001 columns stay);
-- their events lose action, state, actor and details.
DROP INDEX rag.audit_log_time;
DROP INDEX rag.feature_flag_events_flag_time;
ALTER TABLE rag.feature_flag_events
    DROP COLUMN details, DROP COLUMN actor, DROP COLUMN state, DROP COLUMN action;
ALTER TABLE rag.feature_flags
    DROP CONSTRAINT feature_flags_back_is_0, DROP CONSTRAINT feature_flags_complete_is_100,
    DROP CONSTRAINT feature_flags_enabled_state,
    DROP COLUMN created_at, DROP COLUMN cohort_salt, DROP COLUMN force_off,
    DROP COLUMN force_on, DROP COLUMN variant, DROP COLUMN stages, DROP COLUMN state;
