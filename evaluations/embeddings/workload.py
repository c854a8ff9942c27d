"""The texts ``rag bench embeddings`` embeds, picked from SciFact and written to JSON files
the worker processes read: chunks and claims for throughput, long abstracts for agreement
beyond the window, and the retrieval set (whole test split, or a judged subset)."""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluations.common.beir import (
    Document,
    load_beir,
    load_queries,
    queries_path,
    read_documents,
)
from evaluations.embeddings.config import EmbeddingBenchmarkConfig
from rag_core.embeddings import (
    MAX_TOKENS,
    SPECIAL_TOKENS_PER_INPUT,
    ensure_models,
    load_tokenizer,
    onnx_export_dir,
)
from rag_core.errors import BenchmarkError
from rag_core.ingestion.chunking import chunk_document

__all__ = ["EvalSet", "TextSet", "Workload", "document_text", "prepare_workload"]


@dataclass(frozen=True)
class TextSet:
    """Texts written to a JSON file the workers read; ``tokens`` are model input tokens
    (wordpieces + [CLS]/[SEP], truncated at the 256-token window, no padding)."""

    name: str
    kind: str
    path: Path
    texts: list[str]
    tokens: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    def facts(self) -> dict[str, Any]:
        tokens = self.tokens or [0]
        return {"texts": len(self.texts), "tokens": self.total_tokens,
                "tokens_mean": round(statistics.fmean(tokens), 1),
                "tokens_max": max(tokens)}


@dataclass(frozen=True)
class EvalSet:
    """What the retrieval part ran on."""

    queries: int
    docs: int
    judgements: int
    docs_over_window: int
    full_corpus: bool
    corpus_docs: int
    test_queries: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    passages: TextSet
    queries: TextSet
    long_texts: TextSet
    warmup: TextSet
    longest: TextSet  # the longest chunks first: a memory probe embeds 2 batches of them
    eval_docs: TextSet
    eval_queries: TextSet
    eval_doc_ids: list[str]
    eval_query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    workdir: Path
    eval_set: EvalSet
    description: dict[str, Any] = field(default_factory=dict)  # the throughput sets' facts

    def throughput_sets(self) -> tuple[TextSet, TextSet]:
        return self.passages, self.queries


def _model_tokens(counter: Callable[[str], int], text: str) -> int:
    return min(counter(text) + SPECIAL_TOKENS_PER_INPUT, MAX_TOKENS)


def document_text(doc: Document) -> str:
    """What MTEB embeds for a BEIR document: ``title + " " + text``, stripped."""
    return f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()


def prepare_workload(config: EmbeddingBenchmarkConfig, state_dir: Path,
                     workdir: Path) -> Workload:
    """Export the ONNX models if needed, pick the texts and write them where workers read."""
    ensure_models(state_dir)
    tokenizer = load_tokenizer(onnx_export_dir(state_dir) / "fp32")
    count = tokenizer.count_tokens
    dataset = load_beir(config.dataset_dir, "test")
    corpus = read_documents(dataset.corpus_path)
    queries = load_queries(queries_path(config.dataset_dir))  # every split's, for throughput
    qrels = dataset.qrels
    rng = random.Random(config.seed)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    workdir.mkdir(parents=True, exist_ok=True)

    def text_set(name: str, kind: str, texts: list[str]) -> TextSet:
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(texts), encoding="utf-8")
        return TextSet(name, kind, path, texts, [_model_tokens(count, t) for t in texts])

    # throughput: chunks of shuffled abstracts, as ingestion makes them
    chunks: list[str] = []
    chunked_docs = 0
    for index in order:
        if len(chunks) >= config.passages:
            break
        doc = corpus[index]
        chunks += [c.text for c in chunk_document(doc.get("title") or "", doc.get("text") or "",
                                                  tokenizer, config.chunking)]
        chunked_docs += 1
    chunks = chunks[:config.passages]
    query_ids = sorted(queries)
    rng.shuffle(query_ids)
    short = [queries[q] for q in query_ids[:config.queries]]

    # agreement beyond the window: whole abstracts the model has to truncate
    long: list[str] = []
    for index in reversed(order):
        if len(long) >= config.long_texts:
            break
        text = document_text(corpus[index])
        if count(text) + SPECIAL_TOKENS_PER_INPUT > MAX_TOKENS:
            long.append(text)

    # retrieval: the BEIR test split, whole or a judged subset plus distractors
    judged_queries = sorted(q for q in qrels if q in queries)
    if config.eval_queries is not None and config.eval_queries < len(judged_queries):
        eval_query_ids = sorted(rng.sample(judged_queries, config.eval_queries))
    else:
        eval_query_ids = judged_queries
    by_id = {str(doc["_id"]): doc for doc in corpus}
    missing = sorted({d for q in eval_query_ids for d in qrels[q]} - by_id.keys())
    if missing:
        raise BenchmarkError(f"qrels name {len(missing)} documents missing from the "
                             f"corpus, e.g. {missing[:3]}", value=missing[:3])
    if config.distractors is None:
        eval_doc_ids = [str(doc["_id"]) for doc in corpus]
    else:
        judged = {d for q in eval_query_ids for d in qrels[q]}
        others = [str(corpus[i]["_id"]) for i in order if str(corpus[i]["_id"]) not in judged]
        eval_doc_ids = sorted(judged) + others[:config.distractors]
    eval_qrels = {q: dict(qrels[q]) for q in eval_query_ids}
    eval_docs = text_set("eval_docs", "passages", [document_text(by_id[d])
                                                   for d in eval_doc_ids])
    passages = text_set("passages", "passages", chunks)
    queries_set = text_set("queries", "queries", short)
    long_set = text_set("long_texts", "passages", long)
    return Workload(
        passages=passages, queries=queries_set, long_texts=long_set,
        warmup=text_set("warmup", "passages", chunks[:config.warmup_texts]),
        longest=text_set("longest", "passages", sorted(chunks, key=count, reverse=True)),
        eval_docs=eval_docs,
        eval_queries=text_set("eval_queries", "queries", [queries[q] for q in eval_query_ids]),
        eval_doc_ids=eval_doc_ids, eval_query_ids=eval_query_ids, qrels=eval_qrels,
        workdir=workdir,
        eval_set=EvalSet(queries=len(eval_query_ids), docs=len(eval_doc_ids),
                         judgements=sum(len(v) for v in eval_qrels.values()),
                         docs_over_window=sum(t >= MAX_TOKENS for t in eval_docs.tokens),
                         full_corpus=config.full_retrieval, corpus_docs=len(corpus),
                         test_queries=len(judged_queries)),
        description={
            "passages": passages.facts() | {"from_documents": chunked_docs},
            "queries": queries_set.facts(),
            "long_texts": long_set.facts() | {
                "wordpieces_mean": round(statistics.fmean(count(t) for t in long), 1) if long
                else 0},
            "chunking": config.chunking.model_dump(),
        })
