"""``rag rls-overhead`` through the installed console script, against the test servers: one
measurement of the RLS policy's cost with its ``--json`` last line, a tenant with no vectors
measured as such, and a runtime-only process refused with a typed error."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore
from tests.cli.test_failures import assert_one_line_failure, run_rag
from tests.conftest import cli_environment

SAMPLE_FIELDS = {"ok", "measured", "tenant_id", "overhead_ms", "enforced_ms", "bypassed_ms",
                 "rows_enforced", "rows_bypassed", "took_s", "threshold_ms", "above_threshold"}


@pytest.fixture()
def env(settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> dict[str, str]:
    targets = resolve_targets(settings)
    state = tmp_path / "state"
    state.mkdir()
    return cli_environment(DATABASE_URL=targets.admin_url, RAG_APP_DATABASE_URL=targets.app_url,
                           REDIS_URL=redis_server.url(), RAG_STATE_DIR=str(state))


def last_json(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    result = run_rag([*args, "--json"], env, cwd)
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stdout + result.stderr, output
    payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


def test_measures_a_tenant_search_both_ways(env: dict[str, str], tmp_path: Path,
                                            store: VectorStore,
                                            make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    rng = np.random.default_rng(5)
    store.add_document(tenant, "doc://cli", b"c", [
        ChunkToStore(f"chunk {i}", 2, hashlib.sha256(f"{i}".encode()).digest(),
                     rng.standard_normal(384).astype(np.float32)) for i in range(20)])
    shown = last_json(["rls-overhead", "--tenant", tenant, "--repeats", "3"], env, tmp_path)
    assert set(shown) == SAMPLE_FIELDS
    assert shown["measured"] is True and shown["tenant_id"] == tenant
    assert len(shown["enforced_ms"]) == len(shown["bypassed_ms"]) == 3
    assert shown["rows_enforced"] == shown["rows_bypassed"] > 0
    assert shown["above_threshold"] is (shown["overhead_ms"] > shown["threshold_ms"] == 100)

    # A tenant without vectors is searched too: nothing to find, both ways.
    empty = last_json(["rls-overhead", "--tenant", make_tenant(), "--repeats", "1"], env,
                      tmp_path)
    assert empty["rows_enforced"] == empty["rows_bypassed"] == 0


def test_a_runtime_only_process_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    result = run_rag(["rls-overhead", "--json"], {**env, "RAG_RUNTIME_ONLY": "true"}, tmp_path)
    assert_one_line_failure(result, ErrorCode.CONFIGURATION_INVALID)
