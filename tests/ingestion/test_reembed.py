"""Re-embedding a tenant's chunks under a new model key, beside the served vectors: one
vector per chunk and key, the old vectors and their search untouched, a rerun and a resumed
run adding only what is missing, another version refused under a key that holds one, and
a key's vectors dropped only once no question searches them (library and CLI)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.feature_flags import FlagStore
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder, FloatMatrix, TokenCounter
from rag_core.embeddings.registry import load_embedder
from rag_core.errors import EmbeddingKeyRefusedError
from rag_core.ingestion.model_keys import (
    check_droppable,
    coverage,
    drop_vectors,
    registered_model,
    tenants_with_vectors,
)
from rag_core.ingestion.reembed import Reembedding, ReembedPolicy
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.projected_embedder import RandomProjectionEmbedder
from tests.cli.test_failures import RAG, assert_one_line_failure, run_rag
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment
from tests.ingestion.conftest import scifact_records

DEFAULT_KEY = "minilm-l6-v2"
QUESTION = "Which genes are linked to breast cancer risk?"


@pytest.fixture(scope="module")
def platform(create_database: Callable[[str], Settings], embedder: Embedder,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A database of this module's own (flags are global) holding two tenants."""
    settings = create_database("reembed")
    services.upgrade_database(settings)
    with Platform(settings, embedder=embedder, start_services=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def tenants(platform: Platform, embedder: Embedder,
            tmp_path_factory: pytest.TempPathFactory) -> list[TenantId]:
    source = tmp_path_factory.mktemp("reembed") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(12, start=3000)))
    created = []
    for _ in range(2):
        with platform.admin_connection() as conn:
            tenant = tenant_admin.create_tenant(conn, display_name="reembed")
        run_ingestion(platform.database, embedder, platform.vector_store, tenant, source)
        created.append(tenant)
    return created


def _vectors(db: Database, tenant: TenantId, key: str) -> dict[int, str]:
    with db.tenant_session(tenant) as conn:
        return {int(r[0]): str(r[1]) for r in conn.execute(
            "SELECT chunk_id, embedding::text FROM rag.chunk_embeddings "
            "WHERE tenant_id = %s AND model_key = %s", [tenant, key]).fetchall()}


def _chunk_ids(db: Database, tenant: TenantId) -> set[int]:
    with db.tenant_session(tenant) as conn:
        return {int(r[0]) for r in conn.execute(
            "SELECT chunk_id FROM rag.chunks WHERE tenant_id = %s", [tenant]).fetchall()}


def _search(platform: Platform, embedder: Embedder, tenant: TenantId,
            key: str) -> list[tuple[int, float]]:
    store = VectorStore(platform.database, platform.settings, model_key=key)
    query = embedder.embed_queries([QUESTION])[0]
    return [(c.chunk_id, round(c.distance, 5)) for c in store.search(tenant, query, k=8)]


def _job(platform: Platform, key: str, embedder: Embedder,
         policy: ReembedPolicy | None = None) -> Reembedding:
    store = VectorStore(platform.database, platform.settings, model_key=key)
    return Reembedding(platform.database, platform.admin_connection, store, embedder, policy)


class _FailingOnCall:
    """The real embedder, except that its ``fail_on``-th passage batch raises (a process
    killed mid-run, as far as the database can tell)."""

    def __init__(self, inner: Embedder, fail_on: int) -> None:
        self._inner = inner
        self._fail_on = fail_on
        self.calls = 0
        self.model_id, self.model_version = inner.model_id, inner.model_version
        self.backend, self.dimension = inner.backend, inner.dimension
        self.max_tokens = inner.max_tokens

    @property
    def tokenizer(self) -> TokenCounter:
        return self._inner.tokenizer

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._inner.token_offsets(text)

    def embed_passages(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        self.calls += 1
        if self.calls == self._fail_on:
            raise RuntimeError("embedding process killed")
        return self._inner.embed_passages(texts, batch_size)

    def embed_queries(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        return self._inner.embed_queries(texts, batch_size)


def test_reembedding_adds_one_vector_per_chunk_beside_the_old_ones_and_a_rerun_adds_none(
        platform: Platform, tenants: list[TenantId], embedder: Embedder) -> None:
    first, second = tenants
    db = platform.database
    old_first, old_second = _vectors(db, first, DEFAULT_KEY), _vectors(db, second, DEFAULT_KEY)
    served = _search(platform, embedder, first, DEFAULT_KEY)
    chunks = _chunk_ids(db, first)
    assert set(old_first) == chunks and len(chunks) >= 12

    report = _job(platform, "minilm-copy", embedder, ReembedPolicy(batch_chunks=7)).run(first)

    assert (report.registered, report.chunks, report.already_present, report.embedded,
            report.missing) == (True, len(chunks), 0, len(chunks), 0)
    assert report.batches == -(-len(chunks) // 7)
    assert report.model == f"{embedder.model_id}@{embedder.model_version}"
    assert registered_model(db, "minilm-copy") == (report.model, embedder.dimension)
    copied = _vectors(db, first, "minilm-copy")
    assert set(copied) == chunks  # one vector per chunk under the new key (PK: no twin)
    assert _vectors(db, first, DEFAULT_KEY) == old_first  # the old ones untouched
    assert _vectors(db, second, DEFAULT_KEY) == old_second
    assert _vectors(db, second, "minilm-copy") == {}  # only the tenant asked for
    assert _chunk_ids(db, first) == chunks  # nothing chunked again
    assert _search(platform, embedder, first, DEFAULT_KEY) == served
    # the same embedder under the new key finds the same chunks
    assert _search(platform, embedder, first, "minilm-copy") == served

    again = _job(platform, "minilm-copy", embedder).run(first)
    assert (again.registered, again.already_present, again.embedded, again.batches,
            again.missing) == (False, len(chunks), 0, 0, 0)
    assert _vectors(db, first, "minilm-copy") == copied


def test_an_interrupted_reembedding_keeps_what_it_committed_and_a_rerun_finishes(
        platform: Platform, tenants: list[TenantId], embedder: Embedder) -> None:
    tenant = tenants[1]
    chunks = _chunk_ids(platform.database, tenant)
    policy = ReembedPolicy(batch_chunks=4)
    failing = _FailingOnCall(embedder, fail_on=3)
    with pytest.raises(RuntimeError, match="killed"):
        _job(platform, "minilm-resume", failing, policy).run(tenant)
    assert coverage(platform.database, tenant, "minilm-resume").with_vectors == 8

    # the sample check embeds 3 stored chunks first, then the 4 batches left
    resumed = _job(platform, "minilm-resume", embedder, policy).run(tenant)
    assert (resumed.already_present, resumed.embedded, resumed.missing) == (
        8, len(chunks) - 8, 0)
    assert set(_vectors(platform.database, tenant, "minilm-resume")) == chunks


def test_another_version_is_refused_under_a_key_that_holds_one(
        platform: Platform, tenants: list[TenantId], embedder: Embedder) -> None:
    tenant = tenants[0]
    _job(platform, "minilm-versioned", embedder).run(tenant)
    held = _vectors(platform.database, tenant, "minilm-versioned")
    int8 = load_embedder("fastembed-int8", state_dir=TEST_STATE_DIR)

    with pytest.raises(EmbeddingKeyRefusedError, match="dimension 384"):
        _job(platform, "minilm-versioned", RandomProjectionEmbedder(embedder, 48)).run(tenant)
    with pytest.raises(EmbeddingKeyRefusedError, match="int8; use a new key") as refused:
        _job(platform, "minilm-versioned", int8).run(tenant)
    assert refused.value.code is ErrorCode.WRITE_REFUSED
    # the migration's key records a bare model id: the stored vectors are the check
    with pytest.raises(EmbeddingKeyRefusedError, match=r"cosine 0\.99"):
        _job(platform, DEFAULT_KEY, int8).run(tenant)
    assert _vectors(platform.database, tenant, "minilm-versioned") == held
    same = _job(platform, DEFAULT_KEY, embedder).run(tenant)
    assert (same.registered, same.embedded, same.missing) == (False, 0, 0)


def test_a_keys_vectors_are_dropped_only_once_nothing_searches_them(
        platform: Platform, tenants: list[TenantId], embedder: Embedder) -> None:
    first, second = tenants
    db = platform.database
    for tenant in tenants:
        _job(platform, "minilm-drop", embedder).run(tenant)
    flags: FlagStore = platform.flags
    canary = flags.create("to-minilm-drop", {"embedding_model_key": "minilm-drop"})
    try:
        flags.transition(canary.name, state="rolling", percent=5, action="start",
                         actor="test", reason="canary")
        with pytest.raises(EmbeddingKeyRefusedError, match="to-minilm-drop route"):
            check_droppable("minilm-drop", default_key=DEFAULT_KEY, flags=flags.all())
        with pytest.raises(EmbeddingKeyRefusedError, match="default key"):
            check_droppable(DEFAULT_KEY, default_key=DEFAULT_KEY, flags=flags.all())

        flags.transition(canary.name, state="complete", percent=100, action="complete",
                         actor="test", reason="every gate passed", force_off=[second])
        with pytest.raises(EmbeddingKeyRefusedError, match="default key"):  # second stays
            check_droppable(DEFAULT_KEY, default_key=DEFAULT_KEY, flags=flags.all())
        flags.transition(canary.name, state="complete", percent=100, action="complete",
                         actor="test", reason="nobody held back", force_off=[])
        check_droppable(DEFAULT_KEY, default_key=DEFAULT_KEY, flags=flags.all())

        flags.transition(canary.name, state="rolled_back", percent=0, action="rollback",
                         actor="test", reason="rolled back")
        check_droppable("minilm-drop", default_key=DEFAULT_KEY, flags=flags.all())
    finally:
        flags.transition(canary.name, state="rolled_back", percent=0, action="rollback",
                         actor="test", reason="cleanup")

    with platform.admin_connection() as conn:
        assert set(tenants_with_vectors(conn, "minilm-drop")) == set(tenants)
    kept = {key: _vectors(db, first, key) for key in (DEFAULT_KEY, "minilm-copy")}
    chunks = _chunk_ids(db, first)
    assert drop_vectors(db, first, "minilm-drop", batch=5) == len(chunks)
    assert _vectors(db, first, "minilm-drop") == {}
    assert {key: _vectors(db, first, key) for key in kept} == kept
    assert len(_vectors(db, second, "minilm-drop")) == len(_chunk_ids(db, second))
    with platform.admin_connection() as conn:
        assert tenants_with_vectors(conn, "minilm-drop") == [second]
    assert drop_vectors(db, first, "minilm-drop") == 0  # idempotent


def test_rag_embeddings_reembed_and_drop_with_json(
        platform: Platform, tenants: list[TenantId], tmp_path: Path) -> None:
    tenant, other = tenants
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                          RAG_EMBEDDED_DATABASE=platform.settings.embedded_database)
    chunks = len(_chunk_ids(platform.database, tenant))
    args = ["embeddings", "reembed", "--tenant", tenant, "--model-key", "minilm-cli",
            "--backend", "fastembed", "--json"]

    def last_json(argv: list[str]) -> dict[str, Any]:
        result = run_rag(argv, env, REPO_ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
        payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return payload

    made = last_json(args)
    assert (made["model_key"], made["embedded"], made["missing"]) == ("minilm-cli", chunks, 0)
    assert made["tenants"][0]["registered"] is True
    assert last_json(args)["embedded"] == 0
    # every tenant still missing the key's vectors: only the other one now
    others = len(_chunk_ids(platform.database, other))
    everyone = last_json([*args[:2], "--all-tenants", *args[4:]])
    assert [(t["tenant_id"], t["embedded"]) for t in everyone["tenants"]] == [(other, others)]
    assert last_json([*args[:2], "--all-tenants", *args[4:]])["tenants"] == []
    # no terminal to ask on (stdin closed, as in CI): refused, nothing dropped
    unconfirmed = subprocess.run([*RAG, "embeddings", "drop", "--model-key", "minilm-cli",
                                  "--tenant", tenant, "--json"], env=env, cwd=REPO_ROOT,
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=180, check=False)
    assert_one_line_failure(unconfirmed, ErrorCode.CONFIRMATION_REQUIRED)
    assert len(_vectors(platform.database, tenant, "minilm-cli")) == chunks
    dropped = last_json(["embeddings", "drop", "--model-key", "minilm-cli", "--all-tenants",
                         "--yes", "--json"])
    assert dropped["dropped"] == chunks + others
    assert sorted((t["tenant_id"], t["dropped"]) for t in dropped["tenants"]) == sorted(
        [(tenant, chunks), (other, others)])

    refused = run_rag(["embeddings", "drop", "--model-key", DEFAULT_KEY, "--tenant", tenant,
                       "--yes", "--json"], env, REPO_ROOT)
    _, payload = assert_one_line_failure(refused, ErrorCode.WRITE_REFUSED)
    assert payload is not None and "RAG_EMBEDDING_MODEL_KEY" in payload["message"]
    bad = run_rag([*args[:-3], "--backend", "word2vec", "--json"], env, REPO_ROOT)
    assert_one_line_failure(bad, ErrorCode.CONFIGURATION_INVALID)
    with platform.admin_connection() as conn:
        assert conn.execute("SELECT count(*) FROM rag.chunk_embeddings "
                            "WHERE model_key = 'minilm-cli'").fetchone() == (0,)
