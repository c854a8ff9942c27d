"""Shared fixtures: one ONNX export and one instance of each backend per test session.

The export takes several seconds, so it is created once in a session-scoped temporary state
directory (never in the real state directory) and every test reuses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# no model hub access, whatever imports first (the package also enforces this when loading)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from rag_core.embeddings import (
    Embedder,
    ensure_models,
    load_embedder,
    onnx_export_dir,
)
from rag_core.embeddings.registry import clear_cache


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state directory holding the ONNX export (fp32 and int8)."""
    path = tmp_path_factory.mktemp("embeddings-state")
    ensure_models(path)
    yield path
    clear_cache()


@pytest.fixture(scope="session")
def export_dir(state_dir: Path) -> Path:
    return onnx_export_dir(state_dir)


@pytest.fixture(scope="session")
def st_embedder(state_dir: Path) -> Embedder:
    return load_embedder("sentence-transformers", state_dir=state_dir)


@pytest.fixture(scope="session")
def fe_embedder(state_dir: Path) -> Embedder:
    return load_embedder("fastembed", state_dir=state_dir)


@pytest.fixture(scope="session")
def fe_int8_embedder(state_dir: Path) -> Embedder:
    return load_embedder("fastembed-int8", state_dir=state_dir)


@pytest.fixture(scope="session", params=["sentence-transformers", "fastembed", "fastembed-int8"])
def any_embedder(request: pytest.FixtureRequest, state_dir: Path) -> Embedder:
    backend: str = request.param
    return load_embedder(backend, state_dir=state_dir)


_SHORT_TEXTS = [
    "How do I reset my password?",
    "Quarterly revenue grew 12% year over year, driven mainly by cloud subscriptions.",
    "The mitochondrion produces most of the cell's ATP through oxidative phosphorylation.",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "Ünïcödé naïve café résumé, Straße, 東京タワー and an emoji 😀.",
    "Error: connection refused (os error 111) while connecting to 127.0.0.1:5432",
    "I loved this movie! The acting was superb, though the ending felt rushed.",
    "SELECT tenant_id, count(*) FROM documents GROUP BY tenant_id HAVING count(*) > 10;",
    "Patients who received the vaccine showed a 40% reduction in hospitalisation rates.",
    "What is the capital of Australia?",
    "a",
    "",
    "   ",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War in the Holy Roman Empire.",
    "Photosynthesis converts light energy, water and carbon dioxide into glucose and oxygen.",
    "Return policy: items may be returned within 30 days with the original receipt.",
    "RLS policies in PostgreSQL restrict which rows a tenant can read or modify.",
    "Le chat dort sur le canapé pendant que la pluie tombe doucement dehors.",
    "E = mc^2 relates the energy of a body at rest to its mass.",
    "https://example.com/docs/v2/getting-started?lang=en#installation",
]

_CLIMATE = [
    "Global average surface temperatures have risen by roughly 1.1 degrees Celsius since the "
    "late nineteenth century.",
    "Most of that warming is attributed to greenhouse gases released by burning coal, oil and "
    "natural gas.",
    "Higher temperatures intensify heatwaves, shift rainfall patterns and accelerate the melting "
    "of glaciers and polar ice sheets.",
    "Sea levels rise both because meltwater flows into the ocean and because warmer water expands.",
    "Adaptation measures include sea walls, drought-resistant crops and early-warning systems "
    "for floods.",
    "Mitigation focuses on cutting emissions through renewable energy, efficiency and "
    "electrified transport.",
]
_DATABASES = [
    "A relational database stores data in tables made of rows and columns.",
    "Indexes such as B-trees let the planner find matching rows without scanning the whole table.",
    "Transactions group several statements so that they either all succeed or all fail.",
    "Multi-version concurrency control lets readers see a consistent snapshot while writers "
    "proceed.",
    "Vacuuming reclaims the space held by dead tuples that no transaction can see any longer.",
    "Vector extensions add approximate nearest-neighbour indexes for embedding search.",
]
_HISTORY = [
    "The printing press, developed by Johannes Gutenberg around 1440, transformed how "
    "knowledge spread across Europe.",
    "Books became cheaper, literacy rose, and scientific ideas circulated faster than ever before.",
    "Religious reformers used pamphlets to reach audiences far beyond their own cities.",
    "Printers standardised spelling and grammar, shaping the modern forms of many languages.",
    "Governments soon introduced licensing and censorship to control what could be printed.",
]


def _long_text(sentences: list[str], repeats: int) -> str:
    return " ".join(sentences * repeats)


_LONG_TEXTS = [
    _long_text(_CLIMATE, 3),  # ~ 300 tokens
    _long_text(_DATABASES, 5),  # ~ 400 tokens
    _long_text(_HISTORY, 8),  # ~ 600 tokens
    " ".join(_SHORT_TEXTS) * 3,  # mixed content, > 512 tokens
    _long_text(_CLIMATE + _DATABASES + _HISTORY, 2),
]

MIXED_TEXTS = _SHORT_TEXTS + _LONG_TEXTS

QUERIES = [
    "how to reset password",
    "why are sea levels rising",
    "what does vacuum do in postgres",
    "who invented the printing press",
    "vaccine effectiveness against hospitalisation",
    "capital city of australia",
    "return an item without receipt",
    "tenant isolation row level security",
]


@pytest.fixture(scope="session")
def mixed_texts() -> list[str]:
    """Short, empty, multilingual, code and several texts longer than 256 tokens."""
    return list(MIXED_TEXTS)


@pytest.fixture(scope="session")
def long_texts() -> list[str]:
    return list(_LONG_TEXTS)


@pytest.fixture(scope="session")
def queries() -> list[str]:
    return list(QUERIES)
