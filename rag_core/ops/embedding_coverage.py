"""The coverage gate of an embedding rollout: every tenant the flag reaches must have its
chunks' vectors under the key the flag routes them to.

A tenant routed to a key it has no vectors under gets no error: its searches find nothing
and its questions end as ``no_documents``, which the error-rate gate rightly does not count
as the service failing. So nothing else would stop such a rollout. This gate (an *extra
gate* of :class:`~rag_core.ops.rollout.controller.Rollouts`) reads, in one statement on the
admin connection, how many chunks of each tenant lack the key's vector
(:func:`~rag_core.ingestion.model_keys.missing_by_tenant`), then:

- ``fail`` when a tenant the flag reaches now lacks vectors (it is being served from
  nothing: roll back);
- ``hold`` when only tenants the next stage would add lack them (re-embed them with
  ``rag embeddings reembed`` and the stage may pass; a stage held too long pauses);
- ``pass`` otherwise, and for a flag that switches no embedding model key.

Its :class:`~rag_core.ops.rollout.gates.GateResult` counts tenants without the vectors:
``canary`` among those reached now, ``control`` among those the next stage adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from rag_core.common.tenancy import TenantId
from rag_core.db.flag_cohorts import Flag
from rag_core.ingestion.model_keys import AdminConnector, missing_by_tenant
from rag_core.ops.rollout.gates import ExtraGate, GateResult

__all__ = ["GATE_NAME", "embedding_coverage_gate"]

GATE_NAME = "embedding_coverage"
_NAMED = 3  # tenants named in the detail; the count says the rest


def _named(missing: Mapping[TenantId, int]) -> str:
    shown = ", ".join(f"{t} ({n} chunks)" for t, n in list(missing.items())[:_NAMED])
    more = len(missing) - _NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def embedding_coverage_gate(admin: AdminConnector, *,
                            candidate_key: str | None = None) -> ExtraGate:
    """The gate for ``candidate_key`` (default: the key the flag's variant routes to)."""

    def gate(flag: Flag) -> GateResult:
        key = candidate_key or flag.variant.get("embedding_model_key")
        if key is None:
            return GateResult(GATE_NAME, "pass", None, None, 0.0,
                              "the flag switches no embedding model key")
        with admin() as conn:
            missing = {t: n for t, n in missing_by_tenant(conn, key).items() if n}
        now = {t: n for t, n in missing.items() if flag.reaches(t)}
        if now:
            return GateResult(GATE_NAME, "fail", float(len(now)), None, 0.0,
                              f"tenants served from {key!r} without its vectors: "
                              f"{_named(now)}")
        upcoming = replace(flag, state="rolling", percent=flag.next_stage() or 100)
        later = {t: n for t, n in missing.items() if upcoming.reaches(t)}
        if later:
            return GateResult(GATE_NAME, "hold", 0.0, float(len(later)), 0.0,
                              f"the next stage ({upcoming.percent} %) would serve tenants "
                              f"from {key!r} without its vectors: {_named(later)}; run "
                              "rag embeddings reembed for them")
        return GateResult(GATE_NAME, "pass", 0.0, 0.0, 0.0,
                          f"every tenant reached up to {upcoming.percent} % has its "
                          f"vectors under {key!r}")

    return gate
