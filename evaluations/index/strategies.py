"""The strategies of ``rag bench index``: what one measured configuration is (an index or
none, session settings, the SQL it runs) and the SQL of each family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from evaluations.index.database import BenchDatabase
from evaluations.index.vectors import K

__all__ = ["Strategy", "ann_query", "binary_rerank_query", "exact_join_all_query",
           "exact_query", "exact_topk_join_query", "index_settings", "partition_query",
           "product_query"]


@dataclass(frozen=True)
class Strategy:
    """One measured configuration: an index (or none) plus session settings plus SQL."""

    id: str
    family: str
    label: str
    curve: str  # the plot line it belongs to (same index and mode, a swept parameter)
    sweep: float  # position on that line
    query: sql.Composed
    params: dict[str, Any] = field(default_factory=dict)
    setup: tuple[sql.Composed, ...] = ()
    product: bool = False  # rag.search_chunks inside a tenant transaction
    expect_index: tuple[str, ...] = ()  # the plan should use one of these (empty: no check)
    query_params: dict[str, Any] = field(default_factory=dict)


def _settings(*pairs: tuple[str, object]) -> tuple[sql.Composed, ...]:
    return tuple(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(str(value)))
                 for name, value in pairs)


def exact_query(bench: BenchDatabase) -> sql.Composed:
    # "+ 0": no vector index can serve the ORDER BY, so this is an exact scan of the tenant's
    # rows found through the (tenant_id, model_key) b-tree (the product's exact plan)
    return sql.SQL(
        "SELECT e.chunk_id FROM rag.chunk_embeddings e"
        " WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY (e.embedding::vector({d}) <=> %(q)s) + 0 LIMIT {k}").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def exact_topk_join_query(bench: BenchDatabase) -> sql.Composed:
    """The exact plan of rag.search_chunks since migration 0005: the K nearest vectors of the
    tenant first, then the join to rag.chunks for their text (instead of joining every row
    of the tenant and sorting the joined rows); same rows, same order."""
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT e.chunk_id,"
        " (e.embedding::vector({d}) <=> %(q)s) + 0 AS distance FROM rag.chunk_embeddings e"
        " WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY distance, e.chunk_id LIMIT {k})"
        " SELECT c.chunk_id, ch.document_id, ch.tenant_id::text, ch.ordinal, ch.text,"
        " c.distance FROM c JOIN rag.chunks ch ON ch.chunk_id = c.chunk_id"
        " WHERE ch.tenant_id = %(tenant)s ORDER BY c.distance, c.chunk_id").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def exact_join_all_query(bench: BenchDatabase) -> sql.Composed:
    """The exact plan as migration 0001's rag.search_chunks ran it: every row of the tenant
    joined to rag.chunks (text included), then sorted; 0005 replaced it with
    :func:`exact_topk_join_query`. Kept as the baseline of that change."""
    return sql.SQL(
        "SELECT ch.chunk_id, ch.document_id, ch.tenant_id::text, ch.ordinal, ch.text,"
        " (e.embedding::vector({d}) <=> %(q)s) + 0 AS distance"
        " FROM rag.chunk_embeddings e JOIN rag.chunks ch ON ch.chunk_id = e.chunk_id"
        " WHERE e.tenant_id = %(tenant)s AND ch.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY distance, ch.chunk_id LIMIT {k}").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def ann_query(bench: BenchDatabase, cast: str = "vector") -> sql.Composed:
    """Nearest rows through an index on ``embedding::<cast>(d)``; relaxed-order iterative
    scans return rows nearly sorted, so the K rows are re-sorted (as the product does)."""
    expr = sql.SQL("e.embedding::{c}({d})").format(c=sql.SQL(cast), d=sql.Literal(bench.dimension))
    operand = sql.SQL("%(q)s::{c}({d})").format(c=sql.SQL(cast), d=sql.Literal(bench.dimension))
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT e.chunk_id, {expr} <=> {op} AS distance"
        " FROM rag.chunk_embeddings e WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY {expr} <=> {op} LIMIT {k}) SELECT chunk_id FROM c ORDER BY distance").format(
        expr=expr, op=operand, mk=sql.Literal(bench.model_key), k=sql.Literal(K))


def binary_rerank_query(bench: BenchDatabase) -> sql.Composed:
    """Hamming-nearest ``%(candidates)s`` rows by the binary-quantised index, re-ranked by
    exact cosine distance on the full vectors."""
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT e.chunk_id, e.embedding FROM rag.chunk_embeddings e"
        " WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY binary_quantize(e.embedding)::bit({d}) <~> binary_quantize(%(q)s)::bit({d})"
        " LIMIT %(candidates)s)"
        " SELECT chunk_id FROM c ORDER BY c.embedding::vector({d}) <=> %(q)s LIMIT {k}").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def partition_query(*, exact: bool = False) -> sql.Composed:
    # "+ 0" (exact): no index can serve the ORDER BY; enable_indexscan = off is not enough,
    # PostgreSQL 18 still picks the (disabled) HNSW scan of a partition
    order = "(embedding <=> %(q)s) + 0" if exact else "embedding <=> %(q)s"
    return sql.SQL("SELECT id FROM bench.items_part WHERE tenant_id = %(tenant)s"
                   " ORDER BY {order} LIMIT {k}").format(order=sql.SQL(order),
                                                         k=sql.Literal(K))


def product_query(bench: BenchDatabase) -> sql.Composed:
    return sql.SQL(
        "SELECT chunk_id, plan FROM rag.search_chunks(%(tenant)s, {mk}, %(q)s, {k},"
        " %(ef)s, %(exact_max)s, %(iterative)s, %(max_tuples)s)").format(
        mk=sql.Literal(bench.model_key), k=sql.Literal(K))


def index_settings(*, ef_search: int | None = None, iterative: str | None = None,
                   probes: int | None = None, ivf_iterative: str | None = None,
                   force_index: bool = True, extra: tuple[tuple[str, object], ...] = ()
                   ) -> tuple[sql.Composed, ...]:
    pairs: list[tuple[str, object]] = []
    if ef_search is not None:
        pairs.append(("hnsw.ef_search", ef_search))
    if iterative is not None:
        pairs.append(("hnsw.iterative_scan", iterative))
    if probes is not None:
        pairs.append(("ivfflat.probes", probes))
    if ivf_iterative is not None:
        pairs.append(("ivfflat.iterative_scan", ivf_iterative))
    if force_index:
        # on small data the planner may prefer a sequential scan; the row must measure the index
        pairs += [("enable_seqscan", "off"), ("enable_bitmapscan", "off")]
    pairs += list(extra)
    return _settings(*pairs)

