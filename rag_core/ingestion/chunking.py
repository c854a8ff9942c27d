"""Token-window chunking with the embedding model's own tokenizer.

Chunks are measured in the model's wordpieces, so a chunk never exceeds what the model
embeds (all-MiniLM-L6-v2 reads 256 tokens including [CLS] and [SEP]); anything beyond the
window would be silently ignored by the embedding. The document title is kept with every
chunk (it is embedded and stored with it), so a chunk from the middle of a long document
still carries what the document is about. Windows overlap so a sentence cut at a boundary
appears whole in one of the two chunks; cut points snap back to whitespace.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from pydantic import BaseModel, Field, model_validator

from rag_core.embeddings.base import SPECIAL_TOKENS_PER_INPUT, TokenCounter


class ChunkingPolicy(BaseModel, frozen=True):
    """Sizes in model tokens. Defaults fill MiniLM's 256-token window."""

    max_tokens: int = Field(default=256, ge=16, description="model window incl. special tokens")
    overlap_tokens: int = Field(default=32, ge=0)
    max_title_tokens: int = Field(default=48, ge=0)

    @model_validator(mode="after")
    def _overlap_fits(self) -> ChunkingPolicy:
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ValueError(f"overlap_tokens={self.overlap_tokens} must be < half of "
                             f"max_tokens={self.max_tokens}")
        return self


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str  # title + body: what is embedded and stored
    token_count: int
    content_hash: bytes


def normalize(text: str) -> str:
    """NFC, unified newlines, trailing spaces stripped: the form that is hashed."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def content_hash(text: str) -> bytes:
    return hashlib.sha256(normalize(text).encode("utf-8")).digest()


def document_hash(title: str, body: str) -> bytes:
    return hashlib.sha256(f"{normalize(title)}\x00{normalize(body)}".encode()).digest()


def chunk_document(title: str, body: str, tokenizer: TokenCounter,
                   policy: ChunkingPolicy | None = None) -> list[Chunk]:
    """Split ``body`` into token windows, each prefixed with (a bounded part of) ``title``."""
    policy = policy or ChunkingPolicy()
    title = normalize(title)
    body = normalize(body)
    title_offsets = tokenizer.token_offsets(title) if title else []
    if len(title_offsets) > policy.max_title_tokens:
        title = title[:title_offsets[policy.max_title_tokens - 1][1]] if \
            policy.max_title_tokens else ""
        title_offsets = title_offsets[:policy.max_title_tokens]
    prefix = f"{title}\n" if title else ""
    budget = policy.max_tokens - SPECIAL_TOKENS_PER_INPUT - len(title_offsets)
    offsets = tokenizer.token_offsets(body)
    if not offsets:
        text = prefix.strip()
        return [Chunk(0, text, len(title_offsets), content_hash(text))] if text else []

    chunks: list[Chunk] = []
    start = 0
    while start < len(offsets):
        end = min(start + budget, len(offsets))
        if end < len(offsets):
            end = _snap_to_whitespace(body, offsets, start, end)
        piece = body[offsets[start][0]:offsets[end - 1][1]]
        text = prefix + piece
        chunks.append(Chunk(len(chunks), text, len(title_offsets) + (end - start),
                            content_hash(text)))
        if end >= len(offsets):
            break
        start = _word_start(offsets, max(end - policy.overlap_tokens, start + 1), floor=start + 1)
    return chunks


def _word_start(offsets: list[tuple[int, int]], index: int, floor: int) -> int:
    """Move ``index`` back to the first wordpiece of its word (not below ``floor``), so an
    overlapping chunk never starts in the middle of a word."""
    while index > floor and offsets[index][0] == offsets[index - 1][1]:
        index -= 1
    return index


def _snap_to_whitespace(body: str, offsets: list[tuple[int, int]], start: int,
                        end: int) -> int:
    """Move ``end`` back to the last token that ends a word (at most a quarter window)."""
    floor = start + max(1, (end - start) * 3 // 4)
    for candidate in range(end, floor, -1):
        if offsets[candidate][0] > offsets[candidate - 1][1]:  # whitespace before token
            return candidate
    return end
