"""The scratch database of ``rag bench index``: created on the configured server, given the
product's schema (its own migrations), filled with binary COPY, indexed, measured, dropped.

Everything here runs as the owner (the admin URL): DDL needs it, and the benchmark compares
index strategies, not row-level security. The product's tables get ``NO FORCE ROW LEVEL
SECURITY`` in this database only, so the owner can COPY into them and read them without a
tenant session; ``rag.search_chunks`` still demands a matching tenant session and is called
inside one.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from evaluations.index.data import Dataset
from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.connection import resolve_targets
from rag_core.embeddings.base import DIMENSION, MODEL_ID
from rag_core.errors import BenchmarkError

Connection = psycopg.Connection[tuple[Any, ...]]
MARKER = "scratch database of rag bench index (dropped and recreated by it)"
PRODUCT_TABLES = ("tenants", "documents", "chunks", "chunk_embeddings")
COPY_BATCH = 20_000



@dataclass
class BenchDatabase:
    """Where the benchmark runs and what it has put there."""

    url: str  # owner connection to the scratch database
    maintenance_url: str  # owner connection to another database of the server (create/drop)
    name: str
    model_key: str
    dimension: int = DIMENSION
    tenant_ids: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    local_server: bool = False  # the server runs on this machine (backend CPU is readable)

    @property
    def product_index(self) -> str:
        return "chunk_embeddings_hnsw_" + self.model_key.replace(".", "_").replace("-", "_")

    def connect(self, *, register: bool = True) -> Connection:
        conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=None,
                               connect_timeout=10)
        if register:
            register_vector(conn)
        return conn


def _with_dbname(url: str, name: str) -> str:
    return make_conninfo(url, dbname=name)


def _maintenance_url(admin_url: str, avoid: str) -> str:
    """An owner URL to some database other than ``avoid`` (CREATE/DROP DATABASE need one)."""
    current = str(conninfo_to_dict(admin_url).get("dbname") or "")
    candidates = ([admin_url] if current and current != avoid else []) + [
        _with_dbname(admin_url, "postgres"), _with_dbname(admin_url, "template1")]
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=10):
                return url
        except psycopg.OperationalError:
            continue
    raise BenchmarkError(f"cannot connect to the server to create database {avoid}")


def create_bench_database(settings: Settings, name: str) -> BenchDatabase:
    """(Re)create the scratch database ``name``; never touches a database it did not make."""
    targets = resolve_targets(settings)
    if name == targets.database_name:
        raise BenchmarkError(
            f"database {name} is the product's own database; the index benchmark needs a "
            "scratch database of its own (--database)")
    maintenance = _maintenance_url(targets.admin_url, name)
    with psycopg.connect(maintenance, autocommit=True) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                           "WHERE datname = %s", [name]).fetchone()
        if row is not None:
            if row[0] != MARKER:
                raise BenchmarkError(
                    f"database {name} exists and was not created by rag bench index; "
                    "refusing to drop it (choose another --database)")
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(MARKER)))
    host = str(conninfo_to_dict(targets.admin_url).get("host") or "")
    local = targets.embedded or host in ("", "localhost", "127.0.0.1", "::1") \
        or host.startswith("/")
    return BenchDatabase(_with_dbname(targets.admin_url, name), maintenance, name,
                         settings.embedding_model_key, local_server=local)


def drop_bench_database(bench: BenchDatabase) -> None:
    with psycopg.connect(bench.maintenance_url, autocommit=True) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                           "WHERE datname = %s", [bench.name]).fetchone()
        if row is not None and row[0] == MARKER:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(bench.name)))


# --- facts about the server ----------------------------------------------------------------
_SETTINGS = ("server_version", "shared_buffers", "work_mem", "maintenance_work_mem",
             "max_parallel_maintenance_workers", "max_parallel_workers_per_gather",
             "effective_cache_size", "random_page_cost", "jit", "hnsw.ef_search",
             "hnsw.iterative_scan", "hnsw.max_scan_tuples", "ivfflat.probes",
             "ivfflat.iterative_scan", "ivfflat.max_probes")


def server_facts(conn: Connection) -> dict[str, Any]:
    conn.execute("SELECT NULL::vector")  # loads pgvector so its settings exist
    facts: dict[str, Any] = {}
    for name in _SETTINGS:
        row = conn.execute("SELECT current_setting(%s, true)", [name]).fetchone()
        facts[name] = None if row is None else row[0]
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    facts["pgvector"] = None if row is None else row[0]
    row = conn.execute("SELECT pg_jit_available()").fetchone()
    facts["jit_available"] = None if row is None else bool(row[0])
    return facts


def vectorscale_status(conn: Connection) -> str | None:
    """The pgvectorscale version this server can install, or None ("not installed")."""
    row = conn.execute("SELECT default_version FROM pg_available_extensions "
                       "WHERE name = 'vectorscale'").fetchone()
    return None if row is None or row[0] is None else str(row[0])


# --- the product's schema and data -----------------------------------------------------------
def apply_product_schema(bench: BenchDatabase, migrations_dir: Path) -> tuple[list[int],
                                                                              list[str]]:
    """The product's migrations, then what a bulk load needs: no vector index yet (it is
    built after the load, as ``rag.register_embedding_model`` would), no b-tree yet (timed
    after the load), no secondary index on rag.chunks that vector search does not use
    (full text, content hash: they would only slow the load), and no FORCE RLS for the owner.
    Returns the migrations applied and the indexes dropped."""
    with bench.connect(register=False) as conn:
        applied = migrations.upgrade(conn, migrations_dir)
        register_vector(conn)
        row = conn.execute("SELECT dimension FROM rag.embedding_models WHERE model_key = %s",
                           [bench.model_key]).fetchone()
        if row is None:
            conn.execute("INSERT INTO rag.embedding_models (model_key, model_id, dimension) "
                         "VALUES (%s, %s, %s)", [bench.model_key, MODEL_ID, bench.dimension])
        elif int(row[0]) != bench.dimension:
            raise BenchmarkError(f"model {bench.model_key} has dimension {row[0]}, the "
                                      f"benchmark embeds {bench.dimension}")
        conn.execute(sql.SQL("DROP INDEX IF EXISTS rag.{}").format(
            sql.Identifier(bench.product_index)))
        conn.execute("DROP INDEX IF EXISTS rag.chunk_embeddings_tenant_model")
        conn.execute(sql.SQL("DROP INDEX IF EXISTS rag.{}").format(
            sql.Identifier(shared_exact_index(conn, bench.model_key))))
        dropped = [str(r[0]) for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
            "'rag.chunks'::regclass AND NOT indisprimary AND NOT indisunique").fetchall()]
        for name in dropped:
            conn.execute(sql.SQL("DROP INDEX {}").format(
                sql.Identifier(*name.split(".", 1))))
        for table in PRODUCT_TABLES:
            conn.execute(sql.SQL("ALTER TABLE rag.{} NO FORCE ROW LEVEL SECURITY").format(
                sql.Identifier(table)))
        bench.facts = server_facts(conn)
    return applied, dropped


def shared_exact_index(conn: Connection, model_key: str) -> str:
    """The name of the shared partition's covering b-tree for ``model_key`` (migration 0017:
    the exact plan reads a tenant's vectors from it, in tenant order)."""
    row = conn.execute("SELECT rag.shared_exact_index_name(%s)", [model_key]).fetchone()
    assert row is not None
    return str(row[0])


def create_shared_exact(conn: Connection, model_key: str) -> str:
    """Build that covering b-tree (as rag.register_embedding_model does), unless it exists."""
    name = shared_exact_index(conn, model_key)
    conn.execute(sql.SQL(
        "CREATE INDEX IF NOT EXISTS {} ON rag.chunk_embeddings_shared (tenant_id) "
        "INCLUDE (shard, chunk_id, embedding) WHERE model_key = {}").format(
        sql.Identifier(name), sql.Literal(model_key)))
    return name


def _rows_in_load_order(dataset: Dataset) -> Iterator[int]:
    yield from (int(i) for i in dataset.load_order)


def load_product_tables(bench: BenchDatabase, dataset: Dataset,
                        on_rows: Callable[[int], None] | None = None) -> dict[str, float]:
    """Tenants, one document each, chunks and vectors (binary COPY, rows in ``load_order``);
    then the (tenant_id, model_key) b-tree, the shared partition's covering b-tree (0017) and
    VACUUM ANALYZE. Returns timings."""
    from rag_core.common.tenancy import new_tenant_id

    timings: dict[str, float] = {}
    bench.tenant_ids = [str(new_tenant_id()) for _ in dataset.tenants]
    with bench.connect() as conn:
        documents: list[int] = []
        for tenant_id, tenant in zip(bench.tenant_ids, dataset.tenants, strict=True):
            conn.execute("INSERT INTO rag.tenants (tenant_id, display_name) VALUES (%s, %s)",
                         [tenant_id, f"bench {tenant.name}"])
            row = conn.execute(
                "INSERT INTO rag.documents (tenant_id, source_uri, content_hash, title) "
                "VALUES (%s, %s, %s, %s) RETURNING document_id",
                [tenant_id, f"bench://{tenant.name}", hashlib.sha256(tenant_id.encode()).digest(),
                 tenant.name]).fetchone()
            assert row is not None
            documents.append(int(row[0]))
        tenant_of_row = _tenant_lookup(dataset)
        started = time.perf_counter()
        with conn.cursor().copy(
                "COPY rag.chunks (chunk_id, tenant_id, document_id, ordinal, text, token_count, "
                "content_hash) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "int8", "int4", "text", "int4", "bytea"])
            for count, row_index in enumerate(_rows_in_load_order(dataset), 1):
                t = tenant_of_row[row_index]
                copy.write_row([row_index + 1, bench.tenant_ids[t], documents[t],
                                row_index - dataset.tenants[t].start,
                                dataset.texts[int(dataset.text_index[row_index])], 0,
                                row_index.to_bytes(8, "big")])
                if on_rows is not None and count % COPY_BATCH == 0:
                    on_rows(COPY_BATCH)
        timings["copy_chunks_s"] = time.perf_counter() - started
        started = time.perf_counter()
        with conn.cursor().copy(
                "COPY rag.chunk_embeddings (chunk_id, model_key, tenant_id, embedding) "
                "FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "text", "vector"])
            for count, row_index in enumerate(_rows_in_load_order(dataset), 1):
                copy.write_row([row_index + 1, bench.model_key,
                                bench.tenant_ids[tenant_of_row[row_index]],
                                dataset.vectors[row_index]])
                if on_rows is not None and count % COPY_BATCH == 0:
                    on_rows(COPY_BATCH)
        timings["copy_vectors_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("CREATE INDEX chunk_embeddings_tenant_model "
                     "ON rag.chunk_embeddings (tenant_id, model_key)")
        timings["btree_build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        create_shared_exact(conn, bench.model_key)
        timings["shared_exact_build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) rag.chunks, rag.chunk_embeddings")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


def _tenant_lookup(dataset: Dataset) -> list[int]:
    lookup = [0] * len(dataset.vectors)
    for t, tenant in enumerate(dataset.tenants):
        lookup[tenant.start:tenant.stop] = [t] * tenant.rows
    return lookup


def load_partitioned_table(bench: BenchDatabase, dataset: Dataset,
                           on_rows: Callable[[int], None] | None = None) -> float:
    """``bench.items_part``: LIST-partitioned on tenant, one partition per tenant (so each
    tenant's rows are contiguous in its own heap), typed ``vector(384)`` column."""
    with bench.connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        conn.execute("DROP TABLE IF EXISTS bench.items_part")
        conn.execute(sql.SQL(
            "CREATE TABLE bench.items_part (id bigint NOT NULL, tenant_id text NOT NULL,"
            " embedding vector({}) NOT NULL) PARTITION BY LIST (tenant_id)").format(
            sql.Literal(bench.dimension)))
        for t, tenant_id in enumerate(bench.tenant_ids):
            conn.execute(sql.SQL("CREATE TABLE bench.{} PARTITION OF bench.items_part "
                                 "FOR VALUES IN ({})").format(
                sql.Identifier(partition_name(t)), sql.Literal(tenant_id)))
        tenant_of_row = _tenant_lookup(dataset)
        started = time.perf_counter()
        with conn.cursor().copy("COPY bench.items_part (id, tenant_id, embedding) "
                                "FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "vector"])
            for count, row_index in enumerate(_rows_in_load_order(dataset), 1):
                copy.write_row([row_index + 1, bench.tenant_ids[tenant_of_row[row_index]],
                                dataset.vectors[row_index]])
                if on_rows is not None and count % COPY_BATCH == 0:
                    on_rows(COPY_BATCH)
        elapsed = time.perf_counter() - started
        conn.execute("VACUUM (ANALYZE) bench.items_part")
    return elapsed


def partition_name(tenant_index: int) -> str:
    return f"items_part_t{tenant_index + 1}"


# --- indexes ------------------------------------------------------------------------------
@contextlib.contextmanager
def build_session(bench: BenchDatabase, maintenance_work_mem: str,
                  workers: int) -> Iterator[Connection]:
    with bench.connect() as conn:
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
            sql.Literal(maintenance_work_mem)))
        conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(
            sql.Literal(workers)))
        yield conn


def timed(conn: Connection, statement: str | sql.Composed,
          params: list[Any] | None = None) -> float:
    started = time.perf_counter()
    conn.execute(statement, params)
    return time.perf_counter() - started


def index_mb(conn: Connection, names: list[str], schema: str = "rag") -> float:
    total = 0
    for name in names:
        row = conn.execute("SELECT pg_relation_size(to_regclass(%s))",
                           [f"{schema}.{name}"]).fetchone()
        total += int(row[0]) if row is not None and row[0] is not None else 0
    return round(total / 2**20, 2)


def index_options(conn: Connection, name: str, schema: str = "rag") -> list[str]:
    row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)",
                       [f"{schema}.{name}"]).fetchone()
    return list(row[0]) if row is not None and row[0] is not None else []


def drop_index(conn: Connection, name: str, schema: str = "rag") -> None:
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}.{}").format(sql.Identifier(schema),
                                                              sql.Identifier(name)))
