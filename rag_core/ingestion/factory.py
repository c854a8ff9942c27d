"""Build the ingestion pieces from settings (one place, shared by the CLI and the flows)."""

from __future__ import annotations

from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.embeddings.registry import load_embedder
from rag_core.ingestion.chunking import ChunkingPolicy
from rag_core.ingestion.worker import WorkerPolicy
from rag_core.retrieval.vector_store import VectorStore


def embedder_from(settings: Settings) -> Embedder:
    return load_embedder(settings.embedding_backend, state_dir=settings.state_dir)


def worker_policy_from(settings: Settings) -> WorkerPolicy:
    return WorkerPolicy(
        claim_batch=settings.ingest_claim_batch, embed_batch_size=settings.embed_batch_size,
        chunking=ChunkingPolicy(max_tokens=settings.chunk_max_tokens,
                                overlap_tokens=settings.chunk_overlap_tokens))


def store_from(settings: Settings, db: Database) -> VectorStore:
    return VectorStore(db, settings, model_key=settings.embedding_model_key)
