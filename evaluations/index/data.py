"""The data of ``rag bench index``: real MiniLM embeddings of SciFact texts, synthetic vectors
drawn from a mixture fitted to them, tenants of very different sizes, per-tenant queries and
their exact nearest neighbours (the ground truth every strategy is scored against).

How the synthetic vectors are made (the report repeats this with the run's numbers):

1. Real vectors: SciFact abstracts are chunked with the product's chunker and embedded with
   the product's FastEmbed backend (all-MiniLM-L6-v2, fp32, unit length).
2. A Gaussian mixture with one component per real vector is fitted: component ``i`` is
   centred on real vector ``x_i``; its covariance has a low-rank part along the offsets from
   ``x_i`` to its ``neighbours`` nearest real vectors (the directions in which the data
   actually varies there) and a small diagonal part, the per-dimension residual standard
   deviation (vector minus centroid) of ``x_i``'s cluster under spherical k-means (numpy).
3. A synthetic vector picks a component uniformly and is drawn from it:
   ``x_i + sum_j w_j (x_nn_j - x_i) + noise_scale * sigma_cluster * z`` with
   ``w_j ~ N(0, neighbour_scale^2 / neighbours)`` and ``z ~ N(0, I)``, then normalised.
   The two scales were chosen so that a synthetic sample of the real sample's size has the
   same local intrinsic dimension and nearly the same neighbour cosines as the real one;
   isotropic noise alone (a plain kernel density estimate) made every real vector the centre
   of a cloud of near-equidistant copies, far harder for any approximate index than text
   embeddings are. Each run reports the comparison.
4. Rows go to tenants independently of their content (a random permutation cut at the
   tenant shares), so a small tenant's vectors are a uniform sample of the whole space: the
   hard case for a shared index, whose graph neighbours are mostly other tenants' rows.

Queries are real embeddings only: SciFact test claims, and the first chunk of held-out
abstracts that contribute nothing to the data or to the fitted mixture. The geometry (k-means,
the mixture, neighbour statistics, ground truth) is in :mod:`evaluations.index.vectors`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluations.common.beir import corpus_path, load_queries, queries_path, read_documents
from evaluations.index.vectors import (
    K,
    describe_sample,
    extrapolate_cosine,
    fit_mixture,
    ground_truth,
    neighbours_at_scale,
)
from rag_core.config import scifact_dir
from rag_core.embeddings.base import Embedder
from rag_core.errors import BenchmarkError
from rag_core.ingestion.chunking import chunk_document

__all__ = [
    "DISTANCE_TOLERANCE",
    "DataSpec",
    "Dataset",
    "EmbeddingCache",
    "K",
    "TenantData",
    "build_dataset",
    "recall_at_k",
    "select_texts",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
DISTANCE_TOLERANCE = 1e-5  # cosine distance: float32 in the server vs. numpy


@dataclass(frozen=True)
class DataSpec:
    """What to build: sizes, shares, query counts, mixture settings."""

    vectors: int
    shares: tuple[float, ...]
    queries_per_tenant: int
    real_chunks: int
    claim_fraction: float = 0.6
    clusters: int = 64
    neighbours: int = 10
    # Chosen on the 3,000 real chunks (2026-11-25): a synthetic sample of that size then has
    # LID 12.3 (real 12.9), 1-NN cosine 0.74 (0.81), 10-NN cosine 0.46 (0.49). Unfiltered
    # HNSW (m 16, ef_construction 64) on 100,000 such rows: recall@10 0.85 at ef_search 40,
    # 0.94 at 100. Isotropic noise alone (0.75 x residual std, no neighbour term): 0.56 and
    # 0.78, with LID 18.
    neighbour_scale: float = 0.7
    noise_scale: float = 0.35
    seed: int = 20261124
    dataset_dir: Path = field(default_factory=scifact_dir)  # a BEIR folder (SciFact)

    @property
    def claims_per_tenant(self) -> int:
        return max(1, round(self.queries_per_tenant * self.claim_fraction))

    @property
    def heldout_per_tenant(self) -> int:
        return max(0, self.queries_per_tenant - self.claims_per_tenant)

    def tenant_rows(self) -> list[int]:
        """Rows per tenant: the shares of ``vectors``, the rounding remainder to the largest."""
        rows = [max(1, int(self.vectors * share)) for share in self.shares]
        rows[int(np.argmax(self.shares))] += self.vectors - sum(rows)
        return rows


@dataclass(frozen=True)
class TenantData:
    """One tenant: its rows are ``ids[start:stop]`` of the dataset (ids are 1-based)."""

    name: str
    share: float
    start: int
    stop: int
    queries: FloatArray
    query_kinds: list[str]
    truth: IntArray  # (queries, K) 1-based ids, nearest first
    kth_distance: npt.NDArray[np.float64]  # cosine distance of the K-th true neighbour

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def first_id(self) -> int:
        return self.start + 1


@dataclass
class Dataset:
    """All vectors in tenant-block order (row ``i`` has id ``i + 1``) plus the load order."""

    vectors: FloatArray
    texts: list[str]  # per real vector (synthetic rows point at their centre's text)
    text_index: npt.NDArray[np.int32]  # row -> index into ``texts``
    is_real: npt.NDArray[np.bool_]
    tenants: list[TenantData]
    load_order: IntArray  # 0-based rows in the order they are written (heap order)
    description: dict[str, Any] = field(default_factory=dict)

    def tenant_of_id(self, ident: int) -> int:
        for index, tenant in enumerate(self.tenants):
            if tenant.start < ident <= tenant.stop:
                return index
        return -1


# --- texts and embeddings ---------------------------------------------------------------
def select_texts(spec: DataSpec, embedder: Embedder) -> tuple[list[str], list[str], list[str]]:
    """(real chunk texts, claim texts, held-out chunk texts) for ``spec``; deterministic."""
    tenants = len(spec.shares)
    claims_needed = spec.claims_per_tenant * tenants
    heldout_needed = spec.heldout_per_tenant * tenants
    claims = list(load_queries(queries_path(spec.dataset_dir)).values())
    if claims_needed > len(claims):
        raise BenchmarkError(f"{claims_needed} claims asked for, {len(claims)} available",
                             value=claims_needed)
    rng = random.Random(spec.seed)
    rng.shuffle(claims)
    docs = read_documents(corpus_path(spec.dataset_dir))
    rng.shuffle(docs)
    # held-out abstracts from the end of the shuffled list, data from its start: a smaller
    # run's texts are a subset of a larger run's (the embedding cache serves both)
    heldout: list[str] = []
    used = 0
    for doc in reversed(docs):
        if len(heldout) >= heldout_needed:
            break
        used += 1
        pieces = chunk_document(doc.get("title", ""), doc["text"], embedder.tokenizer)
        if pieces:
            heldout.append(pieces[0].text)
    real: list[str] = []
    for doc in docs[:len(docs) - used]:
        if len(real) >= spec.real_chunks:
            break
        real.extend(c.text for c in chunk_document(doc.get("title", ""), doc["text"],
                                                   embedder.tokenizer))
    return real[:spec.real_chunks], claims[:claims_needed], heldout


class EmbeddingCache:
    """Vectors by (model version, kind, text), kept in one ``.npz`` under the state folder, so
    a rerun (or the full run after a quick one) embeds only what it has not seen."""

    def __init__(self, folder: Path, embedder: Embedder) -> None:
        self.embedder = embedder
        self.path = folder / f"embeddings-{embedder.model_version}.npz"
        self._keys: list[str] = []
        self._vectors = np.zeros((0, embedder.dimension), dtype=np.float32)
        if self.path.exists():
            with np.load(self.path) as stored:
                self._keys = [str(k) for k in stored["keys"]]
                self._vectors = stored["vectors"].astype(np.float32)
        self._index = {key: i for i, key in enumerate(self._keys)}
        self.embedded_now = 0

    @staticmethod
    def key(kind: str, text: str) -> str:
        return hashlib.sha256(f"{kind}\x00{text}".encode()).hexdigest()

    def get(self, kind: str, texts: Sequence[str],
            on_batch: Callable[[int], None] | None = None, batch: int = 256) -> FloatArray:
        keys = [self.key(kind, t) for t in texts]
        missing = sorted({i for i, k in enumerate(keys) if k not in self._index})
        if missing:
            fresh: list[FloatArray] = []
            for offset in range(0, len(missing), batch):
                part = [texts[i] for i in missing[offset:offset + batch]]
                embed = (self.embedder.embed_queries if kind == "query"
                         else self.embedder.embed_passages)
                fresh.append(embed(part, batch_size=32))
                if on_batch is not None:
                    on_batch(len(part))
            new_vectors = np.concatenate(fresh)
            keep: list[int] = []
            for vector_row, i in enumerate(missing):
                if keys[i] not in self._index:
                    self._index[keys[i]] = len(self._keys)
                    self._keys.append(keys[i])
                    keep.append(vector_row)
            self._vectors = np.vstack([self._vectors, new_vectors[keep]])
            self.embedded_now += len(missing)
            self._save()
        return np.stack([self._vectors[self._index[k]] for k in keys]).astype(np.float32)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(self._keys), vectors=self._vectors)
        tmp.replace(self.path)


# --- assembling the dataset -------------------------------------------------------------
def build_dataset(spec: DataSpec, embedder: Embedder, cache_dir: Path,
                  on_progress: Callable[[str, int], None] | None = None) -> Dataset:
    """Embed (or read from the cache) the real texts, fit the mixture, draw the synthetic
    rows, split into tenants, pick queries and compute their exact neighbours."""
    rng = np.random.default_rng(spec.seed)
    real_texts, claims, heldout = select_texts(spec, embedder)
    cache = EmbeddingCache(cache_dir, embedder)

    def tick(count: int) -> None:
        if on_progress is not None:
            on_progress("embedding SciFact texts", count)

    real = cache.get("passage", real_texts, tick)
    claim_vectors = cache.get("query", claims, tick)
    heldout_vectors = (cache.get("query", heldout, tick) if heldout
                       else np.zeros((0, real.shape[1]), dtype=np.float32))

    n_real = min(len(real), spec.vectors)
    mixture = fit_mixture(real, spec.clusters, spec.neighbours, spec.neighbour_scale,
                          spec.noise_scale, rng)
    synthetic, centre_of = mixture.sample(spec.vectors - n_real, rng)
    comparison_size = min(len(real), 4000)
    comparison = {
        "real": describe_sample(real[rng.permutation(len(real))[:comparison_size]], rng),
        "synthetic": describe_sample(mixture.sample(comparison_size, rng)[0], rng),
    }
    # rows: the real vectors and the synthetic ones, shuffled, then cut into tenants
    pool = np.concatenate([real[:n_real], synthetic])
    pool_text = np.concatenate([np.arange(n_real), centre_of]).astype(np.int32)
    pool_real = np.concatenate([np.ones(n_real, dtype=bool),
                                np.zeros(len(synthetic), dtype=bool)])
    order = rng.permutation(len(pool))
    vectors = np.ascontiguousarray(pool[order])
    text_index = pool_text[order]
    is_real = pool_real[order]
    del pool, synthetic

    real_stats = comparison["real"]
    at_scale = {
        "rows": len(vectors),
        "synthetic_plus_real": neighbours_at_scale(vectors, rng),
        "extrapolated_from_real": {
            key: extrapolate_cosine(real_stats[key], real_stats["lid_k20"], comparison_size,
                                    len(vectors)) for key in ("nn1_cosine", "nn10_cosine")},
    }
    tenants: list[TenantData] = []
    start = 0
    for t, (share, rows) in enumerate(zip(spec.shares, spec.tenant_rows(), strict=True)):
        stop = start + rows
        c0, h0 = t * spec.claims_per_tenant, t * spec.heldout_per_tenant
        queries = np.concatenate([claim_vectors[c0:c0 + spec.claims_per_tenant],
                                  heldout_vectors[h0:h0 + spec.heldout_per_tenant]])
        kinds = (["claim"] * spec.claims_per_tenant
                 + ["heldout_chunk"] * len(heldout_vectors[h0:h0 + spec.heldout_per_tenant]))
        truth, kth = ground_truth(vectors[start:stop], queries)
        tenants.append(TenantData(f"t{t + 1}_{round(share * 100)}pct", share, start, stop,
                                  queries.astype(np.float32), kinds, truth + start + 1, kth))
        if on_progress is not None:
            on_progress("exact neighbours (numpy)", 1)
        start = stop
    # heap order: rows written in a random order, so every tenant's rows are scattered
    # over the table's pages, as when many tenants ingest concurrently
    load_order = rng.permutation(len(vectors)).astype(np.int64)
    description = {
        "vectors": len(vectors), "dimension": int(vectors.shape[1]),
        "real_vectors": int(n_real), "synthetic_vectors": int(len(vectors) - n_real),
        "real_texts": "SciFact abstracts (BEIR corpus.jsonl.gz), chunked with the product's "
                      "chunker (256 model tokens, 32 overlap), embedded with FastEmbed "
                      f"all-MiniLM-L6-v2 fp32 ({embedder.model_version})",
        "clusters": int(mixture.residual_std.shape[0]),
        "noise_scale": spec.noise_scale, "neighbours": int(mixture.neighbours.shape[1]),
        "neighbour_scale": spec.neighbour_scale,
        "mean_residual_std": round(float(mixture.residual_std.mean()), 5),
        "embedded_now": cache.embedded_now,
        "embedded_from_cache": len(real_texts) + len(claims) + len(heldout) - cache.embedded_now,
        "real_vs_synthetic": comparison, "comparison_size": comparison_size,
        "neighbours_at_full_size": at_scale,
        "claims": len(claims), "heldout_chunks": len(heldout),
        "seed": spec.seed,
    }
    return Dataset(vectors, real_texts, text_index, is_real, tenants, load_order, description)


# --- scoring ------------------------------------------------------------------------------
def recall_at_k(dataset: Dataset, tenant: TenantData, query_index: int,
                returned: Sequence[int]) -> tuple[float, int]:
    """Recall@K of ``returned`` ids for one query, tolerant of distance ties: a returned row
    counts if it is the tenant's and no farther than the K-th true neighbour. Also returns
    the number of returned rows that belong to another tenant (always 0 if filters work)."""
    query = tenant.queries[query_index].astype(np.float64)
    query /= np.linalg.norm(query)
    limit = tenant.kth_distance[query_index] + DISTANCE_TOLERANCE
    hits = 0
    foreign = 0
    for ident in dict.fromkeys(int(i) for i in returned[:K]):
        if not tenant.start < ident <= tenant.stop:
            foreign += 1
            continue
        row = dataset.vectors[ident - 1].astype(np.float64)
        distance = 1.0 - float(row @ query) / float(np.linalg.norm(row))
        if distance <= limit:
            hits += 1
    return min(hits, K) / K, foreign
