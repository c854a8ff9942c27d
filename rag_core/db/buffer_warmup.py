"""Loading relations into shared_buffers before searches need them (``pg_prewarm``, migration
0018).

A promoted tenant's HNSW graph is written through shared_buffers when it is built, but the
moves and graph builds of later promotions and the shared partition's VACUUM pass more pages
through them than they hold: ``rag bench index`` (reports/index/20261202T182853Z) measured
the promoted 25k / 50k tenants at a server CPU p95 of 13 / 17 ms where the same graphs, in
buffers, answer at 6-7 ms. Each query then reads its graph pages from the operating
system's cache, one system call and copy per page. Warming the graph right before its
tenant's searches switch to it (and after a run of promotions, every promoted tenant's) puts
those pages back.

``pg_prewarm`` is the server's own tool for this and reads a relation sequentially in one
call; it is optional (a contrib module that a managed server's non-superuser owner may not
be able to create): without it nothing is warmed and the caller is told so.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

__all__ = ["prewarm_available", "prewarm_indexes"]

Connection = psycopg.Connection[tuple[Any, ...]]


def prewarm_available(conn: Connection) -> bool:
    """Whether ``pg_prewarm`` is installed in the connection's database."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm')"
    ).fetchone() == (True,)


def prewarm_indexes(conn: Connection, table: str, schema: str = "rag") -> int | None:
    """Load every valid index of ``schema.table`` into shared_buffers (for a tenant's
    partition: its graphs and its share of the parent's b-trees); the number of blocks
    loaded (0: no such table), or None when ``pg_prewarm`` is not installed."""
    found = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_prewarm'").fetchone()
    if found is None:
        return None
    row = conn.execute(sql.SQL(
        "SELECT coalesce(sum({f}(i.indexrelid)), 0) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid WHERE i.indisvalid AND c.relname = %s "
        "AND c.relnamespace = %s::regnamespace").format(
        f=sql.Identifier(str(found[0]), "pg_prewarm")), [table, schema]).fetchone()
    return int(row[0]) if row is not None else 0
