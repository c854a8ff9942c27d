"""Recall@10 against p95 latency plots of ``rag bench index``."""

from __future__ import annotations

from pathlib import Path

from evaluations.index.context import BenchContext, StrategyResult
from evaluations.index.judging import p95

__all__ = ["write_plots"]


def write_plots(context: BenchContext, folder: Path, basis: str = "wall") -> list[Path]:
    """Recall@10 against p95 latency: one PNG per tenant (a line per strategy family and
    mode, points along its swept parameter) and one overview with all tenants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = context.config
    curves: dict[str, list[StrategyResult]] = {}
    for result in context.results:
        curves.setdefault(result.strategy.curve, []).append(result)
    colours = plt.get_cmap("tab20")
    paths: list[Path] = []
    tenants = context.dataset.tenants
    overview, axes = plt.subplots(1, len(tenants), figsize=(4.2 * len(tenants), 4.4),
                                  squeeze=False)
    for index, tenant in enumerate(tenants):
        figure, ax = plt.subplots(figsize=(9, 6))
        for target in (ax, axes[0][index]):
            for n, (curve, members) in enumerate(curves.items()):
                members = sorted(members, key=lambda r: r.strategy.sweep)
                xs = [max(p95(r.cells[tenant.name], basis), 0.01) for r in members]
                ys = [r.cells[tenant.name].recall_at_10 for r in members]
                target.plot(xs, ys, marker="o", markersize=4, linewidth=1.2,
                            color=colours(n % 20), label=curve)
            target.axhline(config.goal_recall, color="grey", linestyle="--", linewidth=0.8)
            target.axvline(config.goal_p95_ms, color="grey", linestyle="--", linewidth=0.8)
            target.set_xscale("log")
            target.set_xlabel("p95 CPU time per query (ms, log)" if basis == "cpu"
                              else "p95 latency per query (ms, log)")
            target.set_ylabel("recall@10")
            target.set_ylim(-0.02, 1.02)
            target.set_title(f"{tenant.name} ({tenant.rows:,} rows)")
            target.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        path = folder / f"recall_latency_{tenant.name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    overview.tight_layout()
    path = folder / "recall_latency_all_tenants.png"
    overview.savefig(path, dpi=90)
    plt.close(overview)
    return [path, *paths]
