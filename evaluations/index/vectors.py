"""The numpy geometry behind the synthetic rows of ``rag bench index``: unit vectors,
spherical k-means, the Gaussian mixture fitted to the real embeddings, the statistics that
compare synthetic with real vectors, and the exact nearest neighbours (the ground truth).
See :mod:`evaluations.index.data` for how they are used."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["K", "Mixture", "describe_sample", "extrapolate_cosine", "fit_mixture",
           "ground_truth", "local_intrinsic_dimension", "nearest_neighbours",
           "neighbours_at_scale", "normalise", "spherical_kmeans"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
K = 10  # recall@10


def normalise(matrix: FloatArray) -> FloatArray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: FloatArray = (matrix / norms).astype(np.float32)
    return normalised


def spherical_kmeans(vectors: FloatArray, k: int, rng: np.random.Generator,
                     iterations: int = 25) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Unit-length centroids and labels (cosine k-means, k-means++ seeding)."""
    n = vectors.shape[0]
    k = max(1, min(k, n))
    centres = np.empty((k, vectors.shape[1]), dtype=np.float32)
    centres[0] = vectors[rng.integers(n)]
    closest = 1.0 - vectors @ centres[0]
    for j in range(1, k):
        weights = np.clip(closest, 0, None) ** 2
        total = float(weights.sum())
        pick = rng.choice(n, p=weights / total) if total > 0 else int(rng.integers(n))
        centres[j] = vectors[pick]
        closest = np.minimum(closest, 1.0 - vectors @ centres[j])
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(vectors @ centres.T, axis=1)
        for j in range(k):
            members = vectors[labels == j]
            if len(members):
                centres[j] = members.sum(axis=0)
            else:  # an empty cluster takes the point worst served by its centre
                worst = int(np.argmin(np.max(vectors @ centres.T, axis=1)))
                centres[j] = vectors[worst]
        centres = normalise(centres)
    return centres, np.argmax(vectors @ centres.T, axis=1)


@dataclass(frozen=True)
class Mixture:
    """One Gaussian per real vector: centre, neighbour offsets, cluster residual std."""

    centres: FloatArray
    neighbours: npt.NDArray[np.int64]  # (real, neighbours) indices into ``centres``
    labels: npt.NDArray[np.int64]
    residual_std: FloatArray  # (clusters, dims)
    neighbour_scale: float
    noise_scale: float

    def sample(self, count: int, rng: np.random.Generator,
               chunk: int = 50_000) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """``count`` unit vectors and the index of each one's centre."""
        dims = self.centres.shape[1]
        k = self.neighbours.shape[1]
        out = np.empty((count, dims), dtype=np.float32)
        picks = rng.integers(0, self.centres.shape[0], size=count)
        for offset in range(0, count, chunk):
            part = picks[offset:offset + chunk]
            base = self.centres[part].copy()
            weights = rng.standard_normal((len(part), k), dtype=np.float32)
            weights *= self.neighbour_scale / math.sqrt(k) if k else 0.0
            for j in range(k):
                base += weights[:, j:j + 1] * (self.centres[self.neighbours[part, j]]
                                               - self.centres[part])
            noise = rng.standard_normal((len(part), dims), dtype=np.float32)
            noise *= self.residual_std[self.labels[part]] * self.noise_scale
            out[offset:offset + len(part)] = normalise(base + noise)
        return out, picks


def nearest_neighbours(vectors: FloatArray, k: int, chunk: int = 2048) -> npt.NDArray[np.int64]:
    """Indices of each row's ``k`` nearest other rows (cosine; rows are unit length)."""
    k = max(0, min(k, len(vectors) - 1))
    result = np.empty((len(vectors), k), dtype=np.int64)
    for offset in range(0, len(vectors), chunk):
        sims = vectors[offset:offset + chunk] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + offset] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k else np.zeros((len(rows), 0),
                                                                              dtype=np.int64)
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        result[offset:offset + len(rows)] = np.take_along_axis(top, order, axis=1)
    return result


def fit_mixture(real: FloatArray, clusters: int, neighbours: int, neighbour_scale: float,
                noise_scale: float, rng: np.random.Generator) -> Mixture:
    centroids, labels = spherical_kmeans(real, clusters, rng)
    residual_std = np.zeros_like(centroids)
    overall = (real - centroids[labels]).std(axis=0)
    for j in range(centroids.shape[0]):
        members = real[labels == j]
        # a cluster of one or two has no usable spread: use the overall residual spread
        residual_std[j] = (members - centroids[j]).std(axis=0) if len(members) > 2 else overall
    return Mixture(real, nearest_neighbours(real, neighbours), labels,
                   residual_std.astype(np.float32), neighbour_scale, noise_scale)


def local_intrinsic_dimension(sample: FloatArray, k: int = 20) -> float:
    """Maximum-likelihood LID (Levina-Bickel) over the sample's own k nearest neighbours."""
    sims = sample @ sample.T
    np.fill_diagonal(sims, -np.inf)
    dist = np.sqrt(np.clip(2.0 - 2.0 * np.sort(sims, axis=1)[:, ::-1][:, :k], 1e-12, None))
    ratios = np.log(dist[:, -1:] / dist[:, :-1])
    per_point = (k - 1) / np.maximum(ratios.sum(axis=1), 1e-12)
    return float(np.mean(per_point))


def neighbours_at_scale(vectors: FloatArray, rng: np.random.Generator,
                        sample: int = 200) -> dict[str, float]:
    """Mean cosine of the 1st and K-th nearest neighbour of ``sample`` rows within all rows."""
    picks = rng.choice(len(vectors), size=min(sample, len(vectors) - 1), replace=False)
    sims = vectors[picks] @ vectors.T
    sims[np.arange(len(picks)), picks] = -np.inf
    top = np.sort(np.partition(sims, -K, axis=1)[:, -K:], axis=1)[:, ::-1]
    return {"nn1_cosine": round(float(top[:, 0].mean()), 4),
            "nn10_cosine": round(float(top[:, K - 1].mean()), 4)}


def extrapolate_cosine(cosine: float, lid: float, size_from: int, size_to: int) -> float:
    """Neighbour cosine at ``size_to`` rows from one at ``size_from`` rows, assuming the
    neighbour distance scales as n^(-1/LID)."""
    distance = math.sqrt(max(2.0 - 2.0 * cosine, 0.0)) * (size_from / size_to) ** (1.0 / lid)
    return float(round(1.0 - distance * distance / 2.0, 4))


def describe_sample(sample: FloatArray, rng: np.random.Generator) -> dict[str, float]:
    """Numbers that show whether synthetic vectors look like real ones (same sample size)."""
    sims = sample @ sample.T
    np.fill_diagonal(sims, -np.inf)
    ordered = np.sort(sims, axis=1)[:, ::-1]
    pairs = rng.integers(0, len(sample), size=(20_000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    random_pairs = np.einsum("ij,ij->i", sample[pairs[:, 0]], sample[pairs[:, 1]])
    return {
        "mean_vector_norm": round(float(np.linalg.norm(sample.mean(axis=0))), 4),
        "random_pair_cosine": round(float(random_pairs.mean()), 4),
        "nn1_cosine": round(float(ordered[:, 0].mean()), 4),
        "nn10_cosine": round(float(ordered[:, K - 1].mean()), 4),
        "lid_k20": round(local_intrinsic_dimension(sample), 2),
    }


def ground_truth(vectors: FloatArray, queries: FloatArray,
                 chunk: int = 64) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """0-based indices of the K nearest rows (cosine) per query, and the K-th distance."""
    truth = np.empty((len(queries), K), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float64)
    q_norm = normalise(queries)
    for offset in range(0, len(queries), chunk):
        sims = vectors @ q_norm[offset:offset + chunk].T  # rows are unit length
        for j in range(sims.shape[1]):
            column = sims[:, j]
            top = np.argpartition(-column, K - 1)[:K]
            top = top[np.argsort(-column[top], kind="stable")]
            truth[offset + j] = top
            kth[offset + j] = 1.0 - float(column[top[-1]])
    return truth, kth

