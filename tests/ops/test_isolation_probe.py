"""The seed's acceptance: zero cross-tenant leaks in 10,000 randomized queries and writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.ops.isolation_probe import run_isolation_probe
from tests.conftest import REPO_ROOT, TEST_STATE_DIR


@pytest.mark.slow
def test_ten_thousand_probes_leak_nothing(settings: Settings, db: Database) -> None:
    report = run_isolation_probe(settings, db, probes=10_000, seed=20261125)
    assert report.probes == 10_000
    assert report.leaks == 0, report.leak_examples
    # Every probe kind actually ran, and the attacks were really attempted and refused.
    assert set(report.kinds) == {"search_own", "search_store", "search_other_tenant",
                                 "raw_select", "unset_tenant", "forged_tenant", "injection_id",
                                 "write_foreign", "partition_direct"}
    assert report.write_attempts > 1000
    assert report.refused_writes == report.write_attempts
    assert report.rejected_ids == report.kinds["injection_id"]
    assert report.searches > 3000
    assert report.short_results == 0
    # The 4,000- and 12,000-vector tenants have their own partitions (default threshold
    # 2,000); the 10-, 100- and 1,000-vector ones stay in the shared partition.
    assert report.promoted_sizes == [4_000, 12_000]
    assert set(report.plans) == {"exact", "hnsw_iterative", "own_hnsw"}
    assert report.refused_partition_reads == report.kinds["partition_direct"] > 0


def test_cli_probe_prints_json_last_line(settings: Settings) -> None:
    # Tenants on both sides of the partition threshold: the 500-vector one is promoted.
    env = {**os.environ, "RAG_STATE_DIR": str(TEST_STATE_DIR),
           "RAG_EMBEDDED_DATABASE": settings.embedded_database,
           "RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS": "100",
           "RAG_RETRIEVAL__DEMOTE_BELOW_ROWS": "10"}
    for name in ("DATABASE_URL", "REDIS_URL", "RAG_DATABASE_URL", "RAG_REDIS_URL"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "rag_core.cli", "isolation-probe", "--probes", "300",
         "--tenant-sizes", "5,50,500", "--json"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["probes"] == 300
    assert payload["leaks"] == 0
    assert payload["refused_writes"] == payload["write_attempts"] > 0
    assert payload["tenant_sizes"] == [5, 50, 500]
    assert payload["promoted_sizes"] == [500]
    assert "own_hnsw" in payload["plans"] and "exact" in payload["plans"]
    assert payload["short_results"] == 0
    assert payload["refused_partition_reads"] == payload["kinds"].get("partition_direct", 0)


def test_cli_rejects_bad_tenant_sizes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rag_core.cli", "isolation-probe", "--tenant-sizes", "10,x",
         "--json"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False)
    assert result.returncode == 2
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["error"] == "ConfigurationError"
    assert "10,x" in payload["message"]
