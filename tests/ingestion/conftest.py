"""Fixtures for ingestion tests: the real FastEmbed model (exported once into the test state
folder) and small BEIR-style sources cut from the repository's SciFact demo corpus."""

from __future__ import annotations

import gzip
import itertools
import json

from tests.conftest import REPO_ROOT

SCIFACT = REPO_ROOT / "data" / "scifact" / "corpus.jsonl.gz"


def scifact_records(n: int, start: int = 0) -> list[dict[str, object]]:
    with gzip.open(SCIFACT, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in itertools.islice(handle, start, start + n)]


