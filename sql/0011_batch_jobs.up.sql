-- 0011: batch jobs of the HTTP service and their event log.
--
-- POST /v1/batches stores a job and returns at once; a background runner in one of the
-- service's workers answers it and appends one event per answered question, then a summary
-- event; clients read the events in order (Server-Sent Events resume after a seq). Both
-- tables are tenant data: RLS ENABLEd and FORCEd, foreign keys carrying the tenant, deleted
-- with the tenant.
--
-- rag.batch_jobs holds the questions ALREADY REDACTED (rag_core.pii): the query path answers
-- from the redacted text anyway, so no raw personal data rests here. A job is 'queued' until
-- a worker claims it, then 'running' under a lease (lease_owner until lease_until, renewed
-- while it runs); a worker that dies stops renewing, and once the lease has passed any
-- worker may claim the job and continue it. attempts counts claims that did not end in a
-- hand-back (a worker stopping cleanly gives its attempt back), so a job that kills its
-- workers is recognised and failed instead of killing every worker in turn.
--
-- rag.batch_events: seq is 1, 2, 3... per batch, assigned under the job row's lock by the
-- lease holder only, so events commit in seq order without gaps and a reader that has seen
-- seq n has seen everything before it. One answer per question (a resumed job never writes
-- a question twice) and at most one summary, always the last event.

CREATE TABLE rag.batch_jobs (
    tenant_id      rag.tenant_id NOT NULL REFERENCES rag.tenants (tenant_id) ON DELETE CASCADE,
    batch_id       uuid NOT NULL DEFAULT gen_random_uuid(),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'done', 'failed')),
    question_count integer NOT NULL CHECK (question_count >= 1),
    -- [{"id": question id, "text": redacted question}, ...] in the order asked
    questions      jsonb NOT NULL
                   CHECK (jsonb_typeof(questions) = 'array'
                          AND jsonb_array_length(questions) = question_count),
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    lease_owner    text CHECK (length(lease_owner) BETWEEN 1 AND 200),
    lease_until    timestamptz,
    attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    summary        jsonb,
    PRIMARY KEY (tenant_id, batch_id),
    CHECK (status NOT IN ('done', 'failed') OR (summary IS NOT NULL AND finished_at IS NOT NULL))
);
-- The claim looks at unfinished jobs only (finished ones are nearly all rows in time).
CREATE INDEX batch_jobs_unfinished ON rag.batch_jobs (status, tenant_id, created_at)
    WHERE status IN ('queued', 'running');

CREATE TABLE rag.batch_events (
    tenant_id   rag.tenant_id NOT NULL,
    batch_id    uuid NOT NULL,
    seq         integer NOT NULL CHECK (seq >= 1),
    kind        text NOT NULL CHECK (kind IN ('answer', 'summary')),
    question_id text CHECK (length(question_id) BETWEEN 1 AND 200),
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, batch_id, seq),
    FOREIGN KEY (tenant_id, batch_id)
        REFERENCES rag.batch_jobs (tenant_id, batch_id) ON DELETE CASCADE,
    CHECK ((kind = 'answer') = (question_id IS NOT NULL))
);
CREATE UNIQUE INDEX batch_events_one_answer_per_question
    ON rag.batch_events (tenant_id, batch_id, question_id) WHERE kind = 'answer';
CREATE UNIQUE INDEX batch_events_one_summary
    ON rag.batch_events (tenant_id, batch_id) WHERE kind = 'summary';

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['batch_jobs', 'batch_events']
    LOOP
        EXECUTE format('ALTER TABLE rag.%I ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('ALTER TABLE rag.%I FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON rag.%I FOR ALL TO PUBLIC '
            'USING (tenant_id = rag.current_tenant_id()) '
            'WITH CHECK (tenant_id = rag.current_tenant_id())', tbl);
    END LOOP;
END
$$;

-- The application submits jobs and moves them along; it never rewrites a job's tenant, id
-- or questions, and never deletes one (a tenant's deletion does, by cascade). Events are
-- append-only, like the audit log.
GRANT SELECT, INSERT ON rag.batch_jobs TO rag_app;
GRANT UPDATE (status, started_at, finished_at, lease_owner, lease_until, attempts, summary)
    ON rag.batch_jobs TO rag_app;
GRANT SELECT, INSERT ON rag.batch_events TO rag_app;

-- Claim one job for p_owner for p_lease_s seconds: a queued one, or a running one whose
-- lease has passed (its worker died) or was handed back. The runner has no tenant yet and
-- must see every tenant's queue, which RLS hides from the application role: this function
-- runs as its owner (SECURITY DEFINER, fixed search_path), reveals only ids, and touches
-- only the claimed row. Everything else about the job happens in its tenant's session.
-- Tenants with fewer live jobs go first, so one tenant's long queue does not starve others.
-- FOR UPDATE SKIP LOCKED: concurrent claims get different jobs; a row changed by a claim
-- that committed meanwhile is re-checked, so a live lease is never taken twice.
-- RLS is FORCEd, so the owner sees every tenant only as a superuser or with BYPASSRLS (as the
-- analysts' role needs): without it the queue would look empty forever, so it is refused.
CREATE FUNCTION rag.claim_batch_job(p_owner text, p_lease_s double precision)
    RETURNS TABLE (tenant_id text, batch_id uuid, attempts integer)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    v_tenant text;
    v_batch uuid;
BEGIN
    IF p_owner IS NULL OR length(p_owner) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'batch job owner % must have 1 to 200 characters',
            coalesce(quote_literal(p_owner), 'NULL') USING ERRCODE = '22023';
    END IF;
    -- NOT (...): NaN is neither refused by "<= 0" nor NULL.
    IF p_lease_s IS NULL OR NOT (p_lease_s > 0 AND p_lease_s <= 86400) THEN
        RAISE EXCEPTION 'batch job lease of % s must be over 0 and at most 86400',
            coalesce(p_lease_s::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF NOT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r
                      WHERE r.rolname = current_user), false) THEN
        RAISE EXCEPTION 'rag.claim_batch_job runs as %, which row-level security confines: '
            'its owner must be a superuser or have BYPASSRLS to see every tenant''s queue',
            current_user USING ERRCODE = '42501';
    END IF;

    SELECT j.tenant_id, j.batch_id INTO v_tenant, v_batch
      FROM rag.batch_jobs j
     WHERE j.status = 'queued'
        OR (j.status = 'running'
            AND (j.lease_until IS NULL OR j.lease_until < clock_timestamp()))
     ORDER BY (SELECT count(*) FROM rag.batch_jobs r
                WHERE r.tenant_id = j.tenant_id AND r.status = 'running'
                  AND r.lease_until >= clock_timestamp()),
              j.created_at, j.batch_id
     LIMIT 1
       FOR UPDATE OF j SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    RETURN QUERY
    UPDATE rag.batch_jobs j
       SET status = 'running', lease_owner = p_owner,
           lease_until = clock_timestamp() + make_interval(secs => p_lease_s),
           attempts = j.attempts + 1, started_at = coalesce(j.started_at, clock_timestamp())
     WHERE j.tenant_id = v_tenant AND j.batch_id = v_batch
    RETURNING j.tenant_id::text, j.batch_id, j.attempts;
END
$$;
REVOKE ALL ON FUNCTION rag.claim_batch_job(text, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rag.claim_batch_job(text, double precision) TO rag_app;
