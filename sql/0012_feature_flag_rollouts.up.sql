-- 0012: feature flags that roll out.
--
-- A flag switches one or more query settings (its variant: retrieval mode, prompt version,
-- embedding model) for a cohort of tenants that grows through its stages (default 5, 25,
-- 50, 100 percent). A tenant is in the canary cohort when a keyed hash of (flag, tenant)
-- mod 100 is below the flag's percentage: deterministic (every process agrees without
-- asking anyone) and sticky (a tenant in at 5 % stays in at 25 %). The key is the flag's
-- cohort_salt, drawn when the flag is created, so two flags do not pick the same tenants.
-- force_off wins over force_on, and both over the hash.
--
-- state: 'off' (created, only force_on tenants see the variant), 'rolling' (a rollout is
-- moving it), 'paused' (held at its percentage), 'complete' (100 %: the variant is the
-- default), 'rolled_back' (0 %: nobody, force_on included, sees the variant). `enabled`
-- (from 0001) stays true exactly while the variant reaches anyone through the percentage.
--
-- Flags are global, not tenant rows: the application role reads them (every query consults
-- them, through a short in-process cache), only the owner (rollout flows, rag rollout,
-- rag rollback) changes them. Every change appends an event with who, what and why; a
-- gate's decision records the values measured on both cohorts in `details`.

ALTER TABLE rag.feature_flags
    ADD COLUMN state       text NOT NULL DEFAULT 'off'
                           CHECK (state IN ('off', 'rolling', 'paused', 'complete',
                                            'rolled_back')),
    ADD COLUMN stages      integer[] NOT NULL DEFAULT '{5,25,50,100}'
                           CHECK (cardinality(stages) BETWEEN 1 AND 20
                                  AND 0 < ALL (stages) AND 100 >= ALL (stages)
                                  AND stages[cardinality(stages)] = 100),
    ADD COLUMN variant     jsonb NOT NULL DEFAULT '{}'::jsonb
                           CHECK (jsonb_typeof(variant) = 'object'),
    ADD COLUMN force_on    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN force_off   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN cohort_salt text NOT NULL
                           DEFAULT replace(gen_random_uuid()::text, '-', '')
                           CHECK (cohort_salt ~ '^[0-9a-f]{32}$'),
    ADD COLUMN created_at  timestamptz NOT NULL DEFAULT now();
-- Flags written before this migration (nothing in the product wrote any) keep what they
-- meant: enabled at 100 % is complete, enabled below it paused, anything else off.
UPDATE rag.feature_flags
   SET state = CASE WHEN enabled AND rollout_percent = 100 THEN 'complete'
                    WHEN enabled AND rollout_percent > 0 THEN 'paused' ELSE 'off' END,
       enabled = enabled AND rollout_percent > 0,
       rollout_percent = CASE WHEN enabled THEN rollout_percent ELSE 0 END;
ALTER TABLE rag.feature_flags
    ADD CONSTRAINT feature_flags_enabled_state
        CHECK (enabled = (state IN ('rolling', 'paused', 'complete'))),
    ADD CONSTRAINT feature_flags_complete_is_100
        CHECK (state <> 'complete' OR rollout_percent = 100),
    ADD CONSTRAINT feature_flags_back_is_0
        CHECK (state NOT IN ('rolled_back', 'off') OR rollout_percent = 0);

ALTER TABLE rag.feature_flag_events
    ADD COLUMN action  text NOT NULL DEFAULT 'update'
                       CHECK (action ~ '^[a-z][a-z_]{0,39}$'),
    ADD COLUMN state   text,
    ADD COLUMN actor   text NOT NULL DEFAULT session_user
                       CHECK (length(actor) BETWEEN 1 AND 200),
    ADD COLUMN details jsonb NOT NULL DEFAULT '{}'::jsonb
                       CHECK (jsonb_typeof(details) = 'object');
CREATE INDEX feature_flag_events_flag_time ON rag.feature_flag_events (flag_key, occurred_at);

-- Gates compare cohorts through the audit log's rollout_cohort ("flag=canary,other=control"):
-- the rows of the last soak period, across tenants.
CREATE INDEX audit_log_time ON rag.audit_log (occurred_at);
