"""Feature flags as values, and which tenants a flag reaches (its canary cohort).

A tenant is in a flag's canary cohort when ``HMAC-SHA256(cohort_salt, "flag:tenant") mod
100`` is below the flag's percentage. Deterministic: every process (each API worker, each
Prefect worker, the rollout flow measuring the cohorts) computes the same answer with no
round trip and no shared state beyond the flag row. Sticky: raising the percentage only
adds tenants, so a tenant that saw the canary at 5 % still sees it at 25 %. The salt is the
flag's own (drawn by PostgreSQL when the flag is created, migration 0012), so two flags at
5 % do not land on the same unlucky tenants. ``force_off`` wins over ``force_on``, and
both over the hash; a rolled-back flag reaches nobody, ``force_on`` included: a rollback is
an emergency switch.

What a flag may switch is :data:`VARIANT_KEYS`; the values are checked where a flag is
created (:mod:`rag_core.db.feature_flags`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["COHORTS", "COMPARING_STATES", "FLAG_NAME_REGEX", "FLAG_STATES", "LIVE_STATES",
           "VARIANT_KEYS", "Flag", "FlagState", "cohort_label"]

FlagState = Literal["off", "rolling", "paused", "complete", "rolled_back"]
FLAG_STATES: tuple[FlagState, ...] = ("off", "rolling", "paused", "complete", "rolled_back")
#: States in which the percentage decides (``enabled`` in the table).
LIVE_STATES: frozenset[str] = frozenset({"rolling", "paused", "complete"})
#: States in which canary and control are compared: their audit rows carry the cohort.
COMPARING_STATES: frozenset[str] = frozenset({"rolling", "paused"})
FLAG_NAME_REGEX = r"^[a-z0-9][a-z0-9_.-]{0,62}$"  # the table's CHECK
#: The two sides of a rollout in the audit log's ``rollout_cohort``: the tenants a flag
#: reaches, and the rest (the analytics marts' data quality checks accept exactly these).
COHORTS: tuple[str, str] = ("canary", "control")
#: What a flag can switch on the query path, and the values each setting takes (None: any
#: value the composition root knows, checked when the flag is created).
VARIANT_KEYS: Mapping[str, frozenset[str] | None] = {
    "retrieval_mode": frozenset({"dense", "hybrid"}),
    "prompt_version": None,       # rag_core.llm.prompts.PROMPT_VERSIONS
    "embedding_model_key": None,  # a model registered in rag.embedding_models
}


@dataclass(frozen=True)
class Flag:
    """One feature flag as read from ``rag.feature_flags``."""

    name: str
    state: FlagState
    percent: int
    stages: tuple[int, ...]
    variant: Mapping[str, str]
    salt: str
    force_on: frozenset[str] = field(default_factory=frozenset)
    force_off: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    updated_at: datetime | None = None

    def bucket(self, tenant: str) -> int:
        """The tenant's place 0..99 for this flag (below the percentage: canary)."""
        digest = hmac.new(bytes.fromhex(self.salt), f"{self.name}:{tenant}".encode(),
                          hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") % 100

    def reaches(self, tenant: str) -> bool:
        """Whether ``tenant`` gets this flag's variant now."""
        if self.state == "rolled_back" or tenant in self.force_off:
            return False
        if tenant in self.force_on:
            return True
        return self.state in LIVE_STATES and self.bucket(tenant) < self.percent

    @property
    def comparing(self) -> bool:
        """A rollout is under way: canary and control are told apart in the audit log."""
        return self.state in COMPARING_STATES

    def next_stage(self) -> int | None:
        """The first stage above the current percentage, or None at the last one."""
        return next((s for s in self.stages if s > self.percent), None)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "percent": self.percent,
                "stages": list(self.stages), "variant": dict(self.variant),
                "force_on": sorted(self.force_on), "force_off": sorted(self.force_off),
                "description": self.description,
                "updated_at": None if self.updated_at is None else self.updated_at.isoformat()}


def cohort_label(flags: Sequence[Flag], tenant: str) -> str | None:
    """What the audit row's ``rollout_cohort`` says for ``tenant``: ``name=canary`` or
    ``name=control`` for every flag being rolled out, sorted by name and joined by commas
    (``None`` when no rollout is under way)."""
    canary, control = COHORTS
    parts = [f"{f.name}={canary if f.reaches(tenant) else control}"
             for f in sorted(flags, key=lambda f: f.name) if f.comparing]
    return ",".join(parts) or None
