"""The bad-input probe drives the real CLI in child processes: each bad input gets a typed
code or a rejected record, never a traceback, and leaves the stored rows as they were."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from evaluations.hardening.probe import PROBES, as_markdown, run_probes
from rag_core.config import Settings
from rag_core.ops import services

pytestmark = pytest.mark.usefixtures("embedder")  # the model files the child processes load

_CHOSEN = {"gzip bomb (64 MiB line in one .gz)", "symlink leaving the source folder",
           "question of 8,000 characters", "torn line in a batch file", "unknown tenant"}


def test_bad_inputs_are_refused_and_nothing_stored_moves(
        create_database: Callable[[str], Settings]) -> None:
    settings = create_database("probe")
    services.upgrade_database(settings)
    rows = {r.name: r for r in run_probes(settings, [p for p in PROBES if p.name in _CHOSEN])}

    assert set(rows) == _CHOSEN
    assert not any(r.traceback_seen for r in rows.values()), as_markdown(list(rows.values()))
    for row in rows.values():  # the corpus and the first answer survive every probe
        assert row.before["documents"] == row.after["documents"] == 3
        assert row.before["chunks"] == row.after["chunks"] > 0

    bomb = rows["gzip bomb (64 MiB line in one .gz)"]
    assert bomb.exit_code == 0 and bomb.delta["rejected"] == 1
    assert bomb.code is not None and "rejected record" in bomb.code

    link = rows["symlink leaving the source folder"]
    assert link.exit_code != 0 and link.code == "source_invalid"
    assert link.delta == {"documents": 0, "chunks": 0, "rejected": 0, "audit": 0}

    long_question = rows["question of 8,000 characters"]
    assert long_question.exit_code != 0 and long_question.code == "input_too_large"
    assert long_question.delta["audit"] == 1  # refused, and audited

    torn = rows["torn line in a batch file"]
    assert torn.exit_code != 0 and torn.code == "question_file_invalid"

    unknown = rows["unknown tenant"]
    assert unknown.exit_code == 2 and unknown.code == "unknown_tenant"
