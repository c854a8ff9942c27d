"""When a tenant gets a partition (and HNSW graph) of its own, and how partitions change
(``RAG_RETRIEVAL__*``; migration 0014 and :mod:`rag_core.db.tenant_partitions`).

A tenant whose largest model key holds at least ``own_partition_min_rows`` vectors is
promoted to its own partition by ``rag tenant rebalance`` (and the scheduled ``rebalance``
flow); one that shrinks below ``demote_below_rows`` goes back to the shared partition. The
gap between the two keeps a tenant near the threshold from moving back and forth.

The default threshold, 2,000 rows, is where the shared partition's exact search stops being
cheap, as ``rag bench index`` measured it through ``rag.search_chunks`` once the other
tenants had their own partitions (2 cores, AMD EPYC): a 1,000-row tenant answered at p95
2.1 ms (reports/index/20261203T102227Z, 100,000 vectors), a 5,000-row one at p95 9.7 ms
there and 11.6 ms at 500,000 vectors (reports/index/20261203T080441Z), over the goal of
10 ms; the cost grows with the rows (about 2 ms per 1,000 at p95), so 2,000 rows keeps the
shared tenants near 4 ms. A tenant's own graph answered 25,000 rows at p95 7.1 ms and
250,000 at 7.6 ms (recall@10 >= 0.98) in the same run. A shared tenant past the threshold
that has not been promoted yet is still searched exactly up to ``exact_search_max_rows``
(10,000), then on the shared graph.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PartitionPolicy"]


class PartitionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    own_partition_min_rows: int = Field(
        default=2_000, ge=1, description="vectors (of the tenant's largest model key) from "
                                          "which a tenant gets its own partition and graph")
    demote_below_rows: int = Field(
        default=1_000, ge=0, description="an own-partition tenant below this many vectors "
                                         "goes back to the shared partition")
    move_batch_rows: int = Field(
        default=2_000, ge=1, le=100_000,
        description="rows moved per transaction (each batch: delete from one partition, "
                    "insert into the other)")
    lock_timeout_ms: int = Field(
        default=2_000, ge=1, le=600_000,
        description="how long a partition change waits for a lock before it steps back "
                    "and retries (nobody queues behind it for longer)")
    lock_attempts: int = Field(default=30, ge=1, le=10_000)
    retry_wait_s: float = Field(default=1.0, ge=0, le=600)
    rebuild_shared_graphs_fraction: float = Field(
        default=0.2, gt=0, le=1,
        description="after a promotion that moved at least this fraction of the shared "
                    "partition's rows out, its HNSW graphs and b-trees are rebuilt CONCURRENTLY "
                    "(vacuum repairs a graph around every deleted row: 3,445 s for 495,000 "
                    "moved rows, 2026-12-02; a rebuild of what is left takes seconds; a "
                    "b-tree keeps the moved rows' pages, which turned the planner away "
                    "from it)")
    index_build_memory: str = Field(
        default="256MB", pattern=r"^[0-9]{1,6}(kB|MB|GB)$",
        description="maintenance_work_mem of a graph build (a graph that fits builds "
                    "several times faster)")

    @model_validator(mode="after")
    def _demotion_below_promotion(self) -> PartitionPolicy:
        if self.demote_below_rows >= self.own_partition_min_rows:
            raise ValueError("demote_below_rows must be below own_partition_min_rows")
        return self
