"""`rag tenant delete` purges the tenant's Redis keys (a real child process on the suite's
servers), and says how many."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rag_core.common.tenancy import new_tenant_id
from rag_core.composition import Platform
from rag_core.config import RateLimitPolicy
from rag_core.limits.rate import RateLimiter
from rag_core.query.answer_cache import AnswerCache
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment

_SCRIPT = Path(sys.executable).with_name("rag")
RAG = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "rag_core.cli"]


def test_rag_tenant_delete_purges_the_tenants_redis_keys(platform: Platform) -> None:
    tenant = new_tenant_id()
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR),
                          RAG_EMBEDDED_DATABASE=platform.settings.embedded_database)
    created = subprocess.run([*RAG, "tenant", "create", "--id", tenant], env=env,
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert created.returncode == 0, created.stderr
    answers = AnswerCache(platform.redis, epochs=platform.cache_epochs)
    answers.put(answers.key(tenant, "q", 0), {"answer": "a", "citations": [], "model": "m",
                                              "sources": []})
    RateLimiter(platform.redis_control, RateLimitPolicy()).admit(tenant)
    assert len(platform.tenant_keys.find(tenant)) == 2

    deleted = subprocess.run([*RAG, "tenant", "delete", tenant, "--json"], env=env,
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)

    assert deleted.returncode == 0, deleted.stderr
    report = json.loads(deleted.stdout.strip().splitlines()[-1])
    assert report == {"tenant_id": tenant, "deleted": True, "redis_keys_purged": 2,
                      "redis_purge_error": None}
    assert platform.tenant_keys.find(tenant) == []
