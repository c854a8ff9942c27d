"""Foreign keys carry the tenant: no row can point at another tenant's parent, whoever
writes it (the owner and superusers bypass RLS; referential checks bypass it for everyone)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from rag_core.common.tenancy import TenantId

Connection = psycopg.Connection[tuple[Any, ...]]

# Every foreign key in schema rag between two tables that both have a tenant_id column, with
# whether tenant_id is at the same place on both sides of the key.
_TENANT_PAIRS = """
SELECT k.conrelid::regclass::text, k.confrelid::regclass::text, k.conname,
       EXISTS (SELECT 1 FROM unnest(k.conkey, k.confkey) AS u(child, parent)
                 JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = u.child
                 JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.parent
                WHERE ca.attname = 'tenant_id' AND pa.attname = 'tenant_id')
  FROM pg_constraint k
 WHERE k.contype = 'f' AND k.connamespace = 'rag'::regnamespace
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = k.conrelid
                  AND a.attname = 'tenant_id' AND NOT a.attisdropped)
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = k.confrelid
                  AND a.attname = 'tenant_id' AND NOT a.attisdropped)
"""


def test_every_foreign_key_between_tenant_tables_carries_the_tenant(
        admin_conn: Connection) -> None:
    pairs = admin_conn.execute(_TENANT_PAIRS).fetchall()
    children = {child for child, _, _, _ in pairs}
    # The catalog query sees the pairs (else the assertion below proves nothing).
    assert children >= {"rag.chunks", "rag.chunk_embeddings", "rag.ingestion_items",
                        "rag.ingestion_errors", "rag.documents", "rag.ingestion_jobs",
                        "rag.batch_jobs", "rag.batch_events"}
    assert [(child, parent, name) for child, parent, name, scoped in pairs if not scoped] == []


def _parents_of(admin_conn: Connection, tenant: TenantId) -> dict[str, Any]:
    """A document, chunk and ingestion job of ``tenant`` (written as the owner)."""
    doc = admin_conn.execute(
        "INSERT INTO rag.documents (tenant_id, source_uri, content_hash) "
        "VALUES (%s, 'fk://doc', '\\x00') RETURNING document_id", [tenant]).fetchone()
    assert doc is not None
    chunk = admin_conn.execute(
        "INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, token_count, "
        "content_hash) VALUES (%s, %s, 0, 'a', 1, '\\x00') RETURNING chunk_id",
        [tenant, doc[0]]).fetchone()
    assert chunk is not None
    job = admin_conn.execute("INSERT INTO rag.ingestion_jobs (tenant_id, source_uri) "
                             "VALUES (%s, 'fk://') RETURNING job_id", [tenant]).fetchone()
    assert job is not None
    batch = admin_conn.execute("INSERT INTO rag.batch_jobs (tenant_id, question_count, "
                               "questions) VALUES (%s, 1, '[\"q\"]') RETURNING batch_id",
                               [tenant]).fetchone()
    assert batch is not None
    return {"document": doc[0], "chunk": chunk[0], "job": job[0], "batch": batch[0]}


# A child row of the tenant given first, pointing at the parent named by its key.
CHILD_INSERTS: dict[str, tuple[str, str]] = {
    "chunk -> document": ("document", "INSERT INTO rag.chunks (tenant_id, document_id, "
                          "ordinal, text, token_count, content_hash) "
                          "VALUES (%s, %s, 7, 'b', 1, '\\x00')"),
    "embedding -> chunk": ("chunk", "INSERT INTO rag.chunk_embeddings (tenant_id, chunk_id, "
                           "model_key, embedding) VALUES (%s, %s, 'minilm-l6-v2', "
                           "array_fill(0.1, ARRAY[384])::vector)"),
    "ingestion item -> job": ("job", "INSERT INTO rag.ingestion_items (tenant_id, job_id, "
                              "item_no, source_uri, body, content_hash) "
                              "VALUES (%s, %s, 0, 'fk://1', 'b', '\\x00')"),
    "ingestion error -> job": ("job", "INSERT INTO rag.ingestion_errors (tenant_id, job_id, "
                               "source, reason) VALUES (%s, %s, 'fk', 'test')"),
    "batch event -> batch job": ("batch", "INSERT INTO rag.batch_events (tenant_id, batch_id, "
                                 "seq, kind, data) VALUES (%s, %s, 1, 'summary', '{}')"),
}


@pytest.mark.parametrize("child", sorted(CHILD_INSERTS))
def test_a_row_pointing_at_another_tenants_parent_is_refused_even_for_the_owner(
        admin_conn: Connection, make_tenant: Callable[[], TenantId], child: str) -> None:
    a, b = make_tenant(), make_tenant()
    parents_of_a = _parents_of(admin_conn, a)
    parent, statement = CHILD_INSERTS[child]
    with pytest.raises(psycopg.errors.ForeignKeyViolation), admin_conn.transaction():
        admin_conn.execute(statement, [b, parents_of_a[parent]])
    # The same row for its own tenant is accepted: the key, not the statement, refused it.
    with admin_conn.transaction():
        admin_conn.execute(statement, [a, parents_of_a[parent]])

