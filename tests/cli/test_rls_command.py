"""``rag rls-overhead`` through the installed console script, against the test servers: one
measurement of the RLS policy's cost with its ``--json`` last line, a tenant with no vectors
measured as such, and a runtime-only process refused with a typed error."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore
from tests.cli.test_failures import assert_one_line_failure, run_rag, run_rag_json, servers_env

SAMPLE_FIELDS = {"ok", "measured", "tenant_id", "overhead_ms", "enforced_ms", "bypassed_ms",
                 "rows_enforced", "rows_bypassed", "took_s", "threshold_ms", "above_threshold"}


@pytest.fixture()
def env(settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> dict[str, str]:
    return servers_env(settings, redis_server.url(), tmp_path)


def test_measures_a_tenant_search_both_ways(env: dict[str, str], tmp_path: Path,
                                            store: VectorStore,
                                            make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    rng = np.random.default_rng(5)
    store.add_document(tenant, "doc://cli", b"c", [
        ChunkToStore(f"chunk {i}", 2, hashlib.sha256(f"{i}".encode()).digest(),
                     rng.standard_normal(384).astype(np.float32)) for i in range(20)])
    shown = run_rag_json(["rls-overhead", "--tenant", tenant, "--repeats", "3"], env, tmp_path)
    assert set(shown) == SAMPLE_FIELDS
    assert shown["measured"] is True and shown["tenant_id"] == tenant
    assert len(shown["enforced_ms"]) == len(shown["bypassed_ms"]) == 3
    assert shown["rows_enforced"] == shown["rows_bypassed"] > 0
    assert shown["above_threshold"] is (shown["overhead_ms"] > shown["threshold_ms"] == 100)

    # A tenant without vectors is searched too: nothing to find, both ways.
    empty = run_rag_json(["rls-overhead", "--tenant", make_tenant(), "--repeats", "1"], env,
                      tmp_path)
    assert empty["rows_enforced"] == empty["rows_bypassed"] == 0


def test_a_runtime_only_process_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    result = run_rag(["rls-overhead", "--json"], {**env, "RAG_RUNTIME_ONLY": "true"}, tmp_path)
    assert_one_line_failure(result, ErrorCode.CONFIGURATION_INVALID)
