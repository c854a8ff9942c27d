"""Progress of ``rag bench embeddings``: finished steps, told to a Rich bar or a logger."""

from __future__ import annotations

from collections.abc import Callable

from evaluations.embeddings.config import EmbeddingBenchmarkConfig

__all__ = ["Progress", "ProgressCallback", "planned_steps"]

ProgressCallback = Callable[[str, int, int], None]
"""``(what was just done, steps done, steps planned)``."""


class Progress:
    """Counts finished steps and tells a callback (a Rich bar, a Prefect logger)."""

    def __init__(self, total: int, callback: ProgressCallback | None = None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def step(self, description: str) -> None:
        self.done += 1
        self.note(description)

    def note(self, description: str) -> None:
        """Say what is going on without finishing a step (long steps)."""
        if self._callback is not None:
            self._callback(description, self.done, max(self.total, self.done))


def planned_steps(config: EmbeddingBenchmarkConfig) -> int:
    backends = len(config.backends)
    return (config.probe_rounds * len(config.batch_sizes) * backends  # cold-load/RSS probes
            + backends  # warm workers start (their start is a cold-load sample too)
            + 1  # warm-up
            + config.rounds * len(config.batch_sizes) * backends
            + backends  # agreement vectors
            + backends  # retrieval corpus
            + 1)  # scoring
