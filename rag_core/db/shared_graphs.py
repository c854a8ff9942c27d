"""Rebuilding the shared partition's indexes (its HNSW graphs first) after many of its rows
moved out.

A promotion deletes the tenant's rows from the shared partition. pgvector's VACUUM of an
HNSW index repairs the graph around every deleted element (it searches new neighbours for
each node that pointed at one), so its cost grows with the rows removed: after 495,000 of
500,000 rows moved to their own partitions, ``VACUUM`` of the shared partition took 3,445 s
(``rag bench index --phase plan``, reports/index/20261202T093316Z), and autovacuum does the
same work in the background, throttled, while searches run. A graph rebuilt from the rows
that are left holds no deleted element: on a 100,000-row copy with 95,000 rows moved out,
``REINDEX INDEX CONCURRENTLY`` took 7.0 s and the VACUUM after it 2.1 s; the VACUUM alone, on
a copy of that database, was still repairing the graph when stopped after 17 min 48 s.

The b-trees are rebuilt too. A b-tree keeps its pages after the rows in them are deleted,
and the covering b-tree of 0017 holds a vector per entry (about five entries per page), so
after 495,000 of 500,000 rows moved out it still had the pages of 500,000 entries for 5,000
live ones. The planner costs an index scan by pages per entry, found it dearer than a
sequential scan of the (as sparse) heap: most likely why the shared tenant's exact search
took p50 29.3 ms in ``rag bench index`` (reports/index/20261202T182853Z; that database was
dropped, so not seen there), where the plain exact query over a partition of its own took
8.5 ms at p95. Rebuilt, the index has the pages of what is left (on a 60,000-row copy with
95 % of the rows deleted: 15,076 -> 756 pages, and the plan is an index-only scan again).

``REINDEX ... CONCURRENTLY`` builds the new graph next to the old one (searches keep using
the old one, writes go on) and swaps them; it needs an autocommit connection. An interrupted
rebuild leaves an invalid ``<name>_ccnew`` index (or ``_ccold``), dropped on the next run.
VACUUM (not FULL) takes the lock autovacuum takes: reads and writes go on.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

__all__ = ["rebuild_shared_graphs", "shared_graphs"]

Connection = psycopg.Connection[tuple[Any, ...]]

_INDEXES = """
SELECT c.relname, i.indisvalid, a.amname = 'hnsw'
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
 WHERE i.indrelid = 'rag.chunk_embeddings_shared'::regclass
 ORDER BY a.amname <> 'hnsw', c.relname
"""


def _leftover(name: str) -> bool:
    return "_ccnew" in name or "_ccold" in name


def _usable(rows: list[tuple[Any, ...]], graphs_only: bool) -> list[str]:
    return [str(name) for name, valid, hnsw in rows
            if valid and not _leftover(str(name)) and (hnsw or not graphs_only)]


def shared_graphs(conn: Connection) -> list[str]:
    """The valid HNSW indexes of the shared partition (one per registered model key)."""
    return _usable(conn.execute(_INDEXES).fetchall(), graphs_only=True)


def rebuild_shared_graphs(conn: Connection, memory: str) -> list[str]:
    """Rebuild every index of the shared partition CONCURRENTLY, its HNSW graphs first
    (``memory``: the builds' maintenance_work_mem), then VACUUM the partition: cheap once
    the graphs hold no deleted row, and the moved rows' dead versions are then gone, so the
    next move does not count them again. Returns the names rebuilt."""
    if not conn.autocommit:
        raise ValueError("rebuilding a graph needs an autocommit connection "
                         "(REINDEX CONCURRENTLY)")
    indexes = conn.execute(_INDEXES).fetchall()
    for name, valid, _ in indexes:
        if not valid and _leftover(str(name)):  # an interrupted rebuild's half
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                sql.Identifier("rag", str(name))))
    names = _usable(indexes, graphs_only=False)  # the graphs first (_INDEXES' order)
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(memory)))
    try:
        for name in names:
            conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(
                sql.Identifier("rag", name)))
    finally:
        conn.execute("RESET maintenance_work_mem")
    conn.execute("VACUUM rag.chunk_embeddings_shared")
    return names
