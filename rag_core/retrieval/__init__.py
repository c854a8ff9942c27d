"""Retrieval: the tenant-scoped vector store (SQL) and, later, the retriever on top of it."""

from rag_core.retrieval.vector_store import ChunkToStore, RetrievedChunk, VectorStore

__all__ = ["ChunkToStore", "RetrievedChunk", "VectorStore"]
