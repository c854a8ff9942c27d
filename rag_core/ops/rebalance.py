"""``rag tenant rebalance`` and the ``rebalance`` flow: which tenants get a partition of their
own, which go back to the shared one, and doing it (:mod:`rag_core.db.tenant_partitions`).

A tenant's size is the vector count of its largest model key. The decisions, per tenant:

* ``promote``: shared, at or above ``RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS``;
* ``demote``: own partition, below ``RAG_RETRIEVAL__DEMOTE_BELOW_ROWS``;
* ``resume``: a promotion or demotion that did not finish (``promoting``/``demoting``), taken
  up where it stopped (every step is repeatable);
* ``tune``: own partition whose ef_search differs from what rag.partition_graph_params gives
  its size now (a row change, the graph stays; a graph built with other m/ef_construction is
  reported as ``graph_params_stale`` and rebuilt by a demotion and promotion). A stale graph
  keeps the larger of its ef_search and the table's: a table's lower ef_search was measured
  on the graph the table now builds (0020: ef_construction 200 at ef_search 100 reaches the
  recall ef_construction 64 needed ef_search 200 for), not on the older one;
* ``drop``: a partition with no tenant behind it (a deletion interrupted before its drop),
  or an empty one a shared tenant kept after an interrupted promotion below the threshold.

Sizes and plans of every tenant are read in one statement as the admin with row security
off: a role that does not bypass RLS is refused (it would see no tenant).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config.retrieval import PartitionPolicy
from rag_core.db.tenant_partitions import (
    GraphParams,
    TenantPartitions,
    graph_params_for,
    partition_name,
    tenant_partitions,
)
from rag_core.errors import ConfigurationError, RagCoreError

__all__ = ["Decision", "RebalanceReport", "TenantPlan", "plan_rebalance", "plans_detail",
           "read_plans", "rebalance"]

Connection = psycopg.Connection[tuple[Any, ...]]

_BYPASSES_RLS = "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
_PLANS = """
SELECT t.tenant_id, t.embedding_plan, t.embedding_hnsw_m, t.embedding_hnsw_ef_construction,
       t.embedding_ef_search,
       coalesce((SELECT max(n) FROM (SELECT count(*) AS n FROM rag.chunk_embeddings e
                                      WHERE e.tenant_id = t.tenant_id
                                      GROUP BY e.model_key) s), 0)
  FROM rag.tenants t
 ORDER BY t.tenant_id
"""


@dataclass(frozen=True)
class TenantPlan:
    """A tenant's search plan as recorded on its row, with its size."""

    tenant_id: TenantId
    plan: str
    rows: int
    partition: str | None
    m: int | None
    ef_construction: int | None
    ef_search: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    tenant_id: str
    action: str  # promote | demote | resume | tune | drop
    rows: int
    plan: str
    params: GraphParams | None = None
    graph_params_stale: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = {"tenant_id": self.tenant_id, "action": self.action, "rows": self.rows,
                "plan": self.plan, "graph_params_stale": self.graph_params_stale}
        data["params"] = self.params.as_dict() if self.params else None
        return data


@dataclass
class RebalanceReport:
    dry_run: bool
    decisions: list[Decision]
    done: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "dry_run": self.dry_run,
                "decisions": [d.as_dict() for d in self.decisions],
                "done": self.done, "failed": self.failed}


def read_plans(conn: Connection) -> list[TenantPlan]:
    """Every tenant's plan and size (admin connection that bypasses RLS)."""
    row = conn.execute(_BYPASSES_RLS).fetchone()
    if row is None or not row[0]:
        raise ConfigurationError("DATABASE_URL", "(the admin role)",
                                 "it does not bypass row-level security, so it cannot see "
                                 "every tenant's size and plan")
    partitions = tenant_partitions(conn)
    with conn.transaction():
        conn.execute("SELECT set_config('row_security', 'off', true)")
        rows = conn.execute(_PLANS).fetchall()
    return [TenantPlan(parse_tenant_id(str(t)), str(plan), int(n),
                       partition_name(t) if parse_tenant_id(str(t)) in partitions else None,
                       m, efc, ef) for t, plan, m, efc, ef, n in rows]


def plan_rebalance(conn: Connection, policy: PartitionPolicy) -> list[Decision]:
    """What :func:`rebalance` would do now (see the module docstring)."""
    plans = read_plans(conn)
    decisions: list[Decision] = []
    known = {p.tenant_id for p in plans}
    for orphan in sorted(set(tenant_partitions(conn)) - known):
        decisions.append(Decision(orphan, "drop", 0, "none"))
    for p in plans:
        params = graph_params_for(conn, p.rows)
        if p.plan == "promoting":
            decisions.append(Decision(p.tenant_id, "resume", p.rows, p.plan,
                                      _recorded(p) or params))
        elif p.plan == "demoting":
            decisions.append(Decision(p.tenant_id, "resume", p.rows, p.plan))
        elif p.plan == "shared" and p.rows >= policy.own_partition_min_rows:
            decisions.append(Decision(p.tenant_id, "promote", p.rows, p.plan, params))
        elif p.plan == "shared" and p.partition is not None:
            decisions.append(Decision(p.tenant_id, "drop", p.rows, p.plan))
        elif p.plan == "own" and p.rows < policy.demote_below_rows:
            decisions.append(Decision(p.tenant_id, "demote", p.rows, p.plan))
        elif p.plan == "own":
            stale = (p.m, p.ef_construction) != (params.m, params.ef_construction)
            if stale and p.ef_search is not None and p.ef_search > params.ef_search:
                params = GraphParams(params.m, params.ef_construction, p.ef_search)
            if p.ef_search != params.ef_search or stale:
                decisions.append(Decision(p.tenant_id, "tune", p.rows, p.plan, params,
                                          graph_params_stale=stale))
    return decisions


def _recorded(p: TenantPlan) -> GraphParams | None:
    if p.m is None or p.ef_construction is None or p.ef_search is None:
        return None
    return GraphParams(p.m, p.ef_construction, p.ef_search)


def rebalance(conn: Connection, policy: PartitionPolicy, *,
              dry_run: bool = False) -> RebalanceReport:
    """Decide, then (unless ``dry_run``) carry out every decision; a tenant whose move
    fails (busy past every retry) is reported and left for the next run."""
    decisions = plan_rebalance(conn, policy)
    report = RebalanceReport(dry_run, decisions)
    if dry_run:
        return report
    partitions = TenantPartitions(conn, policy)
    for decision in decisions:
        try:
            if decision.action == "drop":
                partitions.drop(decision.tenant_id)
                report.done.append({"tenant_id": decision.tenant_id, "action": "drop"})
            elif decision.action == "promote" or (decision.action == "resume"
                                                  and decision.plan == "promoting"):
                assert decision.params is not None
                moved = partitions.promote(decision.tenant_id, decision.params)
                report.done.append({"action": decision.action, **moved.as_dict()})
            elif decision.action in ("demote", "resume"):
                moved = partitions.demote(decision.tenant_id)
                report.done.append({"action": decision.action, **moved.as_dict()})
            elif decision.action == "tune" and decision.params is not None:
                partitions.set_ef_search(decision.tenant_id, decision.params.ef_search)
                report.done.append({"tenant_id": decision.tenant_id, "action": "tune",
                                    "ef_search": decision.params.ef_search})
        except RagCoreError as exc:
            report.failed.append({"tenant_id": decision.tenant_id,
                                  "action": decision.action, "error": str(exc)})
    return report


def plans_detail(conn: Connection,
                 policy: PartitionPolicy) -> tuple[Literal["ok", "warn", "info"], str]:
    """``rag doctor``'s line on tenant plans: (status, detail)."""
    try:
        plans = read_plans(conn)
        pending = plan_rebalance(conn, policy)
    except (RagCoreError, psycopg.Error) as exc:
        return "info", f"not read: {exc}"
    shown = "; ".join(
        f"{p.tenant_id}: {p.rows} rows, {p.plan}"
        + (f" ({p.partition}, m {p.m}, ef_construction {p.ef_construction}, "
           f"ef_search {p.ef_search})" if p.partition else "")
        for p in plans) or "no tenants"
    moving = [d for d in pending if d.action in ("resume", "drop")]
    due = [d for d in pending if d.action in ("promote", "demote", "tune")]
    detail = (f"threshold {policy.own_partition_min_rows} rows (demote below "
              f"{policy.demote_below_rows}): {shown}")
    if due:
        detail += f"; rebalance due for {len(due)} tenant(s): run `rag tenant rebalance`"
    if moving:
        return "warn", (detail + f"; {len(moving)} interrupted move(s) or orphan "
                        "partition(s): run `rag tenant rebalance`")
    return "ok", detail
