"""The phases of ``rag bench index``, one per index family: build what the phase needs,
measure its strategies on every tenant, drop its index again (so the next family does not
compete with it for the same ORDER BY). Helpers shared by all phases are in
:mod:`evaluations.index.building`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from evaluations.index.building import build_index, drop, drop_vector_competitors, measure, psql
from evaluations.index.config import FORCED_EXACT, NOT_INSTALLED
from evaluations.index.context import BenchContext, ProgressSink, StrategyResult
from evaluations.index.database import (
    index_mb,
    load_partitioned_table,
    partition_name,
    shared_exact_index,
    vectorscale_status,
)
from evaluations.index.judging import best_function_config
from evaluations.index.measure import explain
from evaluations.index.plan_phase import phase_plan
from evaluations.index.strategies import (
    Strategy,
    ann_query,
    binary_rerank_query,
    exact_join_all_query,
    exact_query,
    exact_topk_join_query,
    index_settings,
    partition_query,
    product_query,
)

__all__ = ["PHASE_RUNNERS"]


def _btree_build(context: BenchContext) -> dict[str, Any]:
    """The tenant b-tree's build time and size (built by the load): every phase that reports
    it records it itself, so a phase runs alone (``--phase product`` needs no exact phase)."""
    if "btree" not in context.builds:
        with context.require_bench().connect() as conn:
            size = index_mb(conn, ["chunk_embeddings_tenant_model"])
        context.builds["btree"] = {"index": "chunk_embeddings_tenant_model",
                                   "build_s": round(context.timings["btree_build_s"], 2),
                                   "index_mb": size}
    return context.builds["btree"]


def _phase_exact(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    bench = context.require_bench()
    size = _btree_build(context)["index_mb"]
    strategy = Strategy("exact_btree", "exact", "exact (tenant b-tree)", "exact", 0,
                        exact_query(bench), {"index": "btree (tenant_id, model_key)"},
                        expect_index=())
    joined = Strategy("exact_topk_then_join", "exact",
                      "exact, top 10 first, then join rag.chunks (0005)",
                      "exact, top-k then join", 0, exact_topk_join_query(bench),
                      {"index": "btree (tenant_id, model_key)"})
    join_all = Strategy("exact_join_all_then_topk", "exact",
                        "exact, join every row to rag.chunks, then top 10 (0001)",
                        "exact, join then top-k", 0, exact_join_all_query(bench),
                        {"index": "btree (tenant_id, model_key)"})
    build_s = context.timings["btree_build_s"]
    return [measure(context, strategy, sink, build_s, size),
            measure(context, joined, sink, build_s, size),
            measure(context, join_all, sink, build_s, size)]


def _ensure_product_index(context: BenchContext) -> dict[str, Any]:
    bench = context.require_bench()
    if bench.product_index not in context.present:
        from rag_core.embeddings.base import MODEL_ID

        # the product's own DDL, with its own defaults (m, ef_construction)
        build_index(context, "hnsw_product", bench.product_index,
               "SELECT rag.register_embedding_model(%s, %s, %s)",
               [bench.model_key, MODEL_ID, bench.dimension])
    return context.builds["hnsw_product"]


def _product_strategy(context: BenchContext, sid: str, label: str, *, ef: int, exact_max: int,
                      curve: str, sweep: float) -> Strategy:
    settings = context.settings
    params = {"ef_search": max(ef, 10), "exact_max_rows": exact_max,
              "iterative_scan": settings.hnsw_iterative_scan,
              "max_scan_tuples": settings.hnsw_max_scan_tuples}
    return Strategy(sid, "product", label, curve, sweep, product_query(context.require_bench()),
                    params, product=True,
                    query_params={"ef": params["ef_search"], "exact_max": exact_max,
                                  "iterative": settings.hnsw_iterative_scan,
                                  "max_tuples": settings.hnsw_max_scan_tuples})


def _phase_product(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """``rag.search_chunks`` itself: its exact and HNSW branches forced (building blocks for
    candidate defaults), the configured default, and the best candidate if it differs."""
    build = _ensure_product_index(context)
    settings = context.settings
    results: list[StrategyResult] = []
    exact = _product_strategy(context, "product_forced_exact", "search_chunks, exact branch",
                              ef=settings.hnsw_ef_search, exact_max=FORCED_EXACT,
                              curve="search_chunks exact branch", sweep=0)
    btree = _btree_build(context)
    results.append(measure(context, exact, sink, btree["build_s"], btree["index_mb"]))
    for ef in context.config.product_ef:
        strategy = _product_strategy(context, f"product_forced_hnsw_ef{ef}",
                                     f"search_chunks, HNSW branch, ef_search {ef}", ef=ef,
                                     exact_max=0, curve="search_chunks HNSW branch", sweep=ef)
        results.append(measure(context, strategy, sink, build["build_s"], build["index_mb"]))
    default = _product_strategy(
        context, "product_default",
        f"search_chunks default (exact <= {settings.exact_search_max_rows:,} rows, else HNSW "
        f"ef {max(settings.hnsw_ef_search, 10)})", ef=settings.hnsw_ef_search,
        exact_max=settings.exact_search_max_rows, curve="search_chunks default", sweep=0)
    results.append(measure(context, default, sink, build["build_s"], build["index_mb"]))
    context.notes.extend(_planner_check(context))
    candidate = best_function_config(context, results)
    if candidate is not None and (candidate.exact_max_rows, candidate.ef_search) != (
            settings.exact_search_max_rows, max(settings.hnsw_ef_search, 10)):
        proposed = _product_strategy(
            context, "product_proposed",
            f"search_chunks proposed (exact <= {candidate.exact_max_rows:,} rows, else "
            f"HNSW ef {candidate.ef_search})", ef=candidate.ef_search,
            exact_max=candidate.exact_max_rows, curve="search_chunks proposed", sweep=0)
        sink.add_total(len(context.dataset.tenants))
        results.append(measure(context, proposed, sink, build["build_s"], build["index_mb"]))
    return results


def _planner_check(context: BenchContext) -> list[str]:
    """Which plan the server picks for the product's HNSW-branch query, per tenant, with the
    b-tree present (as in production)."""
    bench = context.require_bench()
    notes = []
    with bench.connect() as conn:
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        strategy = Strategy("check", "check", "check", "check", 0, ann_query(bench))
        for tenant, tenant_id in zip(context.dataset.tenants, bench.tenant_ids, strict=True):
            plan = explain(conn, strategy, tenant_id, tenant.queries[0])
            notes.append(f"planner, HNSW-branch query, {tenant.name}: {plan}")
    return notes


def _phase_hnsw(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """The product's HNSW index alone (the tenant b-trees are dropped so the planner cannot
    swap in an exact plan): ef_search sweep x iterative scan modes."""
    build = _ensure_product_index(context)
    bench = context.require_bench()
    drop(context, "chunk_embeddings_tenant_model")
    with bench.connect() as conn:
        drop(context, shared_exact_index(conn, bench.model_key))
    return [measure(context, s, sink, build["build_s"], build["index_mb"])
            for s in _hnsw_strategies(context, build, bench.product_index, "hnsw",
                                      "hnsw (product index)")]


def _hnsw_strategies(context: BenchContext, build: dict[str, Any], index: str, prefix: str,
                     name: str) -> list[Strategy]:
    config, bench = context.config, context.require_bench()
    options = ",".join(build.get("options", [])) or "defaults"
    configs = [(ef, mode) for mode in config.hnsw_modes for ef in config.hnsw_ef]
    if prefix == "hnsw":
        configs += [(ef, "strict_order") for ef in config.hnsw_strict_ef]
    strategies = []
    for ef, mode in configs:
        strategies.append(Strategy(
            f"{prefix}_ef{ef}_{mode}", "hnsw", f"{name} ef_search {ef}, iterative {mode}",
            f"{name}, iterative {mode}", ef, ann_query(bench),
            {"index": index, "build": options, "ef_search": ef, "iterative_scan": mode},
            index_settings(ef_search=ef, iterative=mode), expect_index=(index,)))
    return strategies


def _phase_ivfflat(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    config, bench = context.config, context.require_bench()
    drop_vector_competitors(context)
    lists = config.ivf_lists or max(10, len(context.dataset.vectors) // 1000)
    name = "bench_ivfflat"
    build = build_index(context, "ivfflat", name, psql(
        "CREATE INDEX {name} ON rag.chunk_embeddings USING ivfflat ((embedding::vector({d}))"
        " vector_cosine_ops) WITH (lists = {lists}) WHERE model_key = {mk}",
        name=name, d=bench.dimension, lists=lists, mk=bench.model_key))
    results = []
    for mode in config.ivf_modes:
        for probes in config.ivf_probes:
            strategy = Strategy(
                f"ivfflat_l{lists}_p{probes}_{mode}", "ivfflat",
                f"ivfflat lists {lists} probes {probes}, iterative {mode}",
                f"ivfflat lists {lists}, iterative {mode}", probes, ann_query(bench),
                {"index": name, "lists": lists, "probes": probes, "iterative_scan": mode},
                index_settings(probes=probes, ivf_iterative=mode), expect_index=(name,))
            results.append(measure(context, strategy, sink, build["build_s"],
                                    build["index_mb"]))
    drop(context, name)
    return results


def _phase_halfvec(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    config, bench = context.config, context.require_bench()
    name = "bench_hnsw_halfvec"
    build = build_index(context, "halfvec", name, psql(
        "CREATE INDEX {name} ON rag.chunk_embeddings USING hnsw ((embedding::halfvec({d}))"
        " halfvec_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE model_key = {mk}",
        name=name, d=bench.dimension, mk=bench.model_key))
    results = []
    for mode in config.hnsw_modes:
        for ef in config.halfvec_ef:
            strategy = Strategy(
                f"halfvec_ef{ef}_{mode}", "halfvec",
                f"hnsw halfvec ef_search {ef}, iterative {mode}",
                f"hnsw halfvec (m 16, efc 64), iterative {mode}", ef,
                ann_query(bench, "halfvec"),
                {"index": name, "m": 16, "ef_construction": 64, "ef_search": ef,
                 "iterative_scan": mode},
                index_settings(ef_search=ef, iterative=mode), expect_index=(name,))
            results.append(measure(context, strategy, sink, build["build_s"],
                                    build["index_mb"]))
    drop(context, name)
    return results


def _phase_binary(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    config, bench = context.config, context.require_bench()
    name = "bench_hnsw_binary"
    build = build_index(context, "binary", name, psql(
        "CREATE INDEX {name} ON rag.chunk_embeddings USING hnsw"
        " ((binary_quantize(embedding)::bit({d})) bit_hamming_ops)"
        " WITH (m = 16, ef_construction = 64) WHERE model_key = {mk}",
        name=name, d=bench.dimension, mk=bench.model_key))
    results = []
    for mode in config.hnsw_modes:
        for candidates in config.binary_candidates:
            ef = min(max(candidates, 40), 1000)
            strategy = Strategy(
                f"binary_c{candidates}_{mode}", "binary",
                f"hnsw binary, {candidates} candidates re-ranked, iterative {mode}",
                f"hnsw binary_quantize + re-rank, iterative {mode}", candidates,
                binary_rerank_query(bench),
                {"index": name, "m": 16, "ef_construction": 64, "candidates": candidates,
                 "ef_search": ef, "iterative_scan": mode},
                index_settings(ef_search=ef, iterative=mode), expect_index=(name,),
                query_params={"candidates": candidates})
            results.append(measure(context, strategy, sink, build["build_s"],
                                    build["index_mb"]))
    drop(context, name)
    return results


def _phase_hnsw_extra(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    bench = context.require_bench()
    results = []
    for m, efc in context.config.extra_hnsw:
        drop_vector_competitors(context)
        name = f"bench_hnsw_m{m}_efc{efc}"
        build = build_index(context, f"hnsw_m{m}_efc{efc}", name, psql(
            "CREATE INDEX {name} ON rag.chunk_embeddings USING hnsw ((embedding::vector({d}))"
            " vector_cosine_ops) WITH (m = {m}, ef_construction = {efc})"
            " WHERE model_key = {mk}", name=name, d=bench.dimension, m=m, efc=efc,
            mk=bench.model_key))
        strategies = _hnsw_strategies(context, build, name, f"hnsw_m{m}_efc{efc}",
                                      f"hnsw m {m} efc {efc}")
        results += [measure(context, s, sink, build["build_s"], build["index_mb"])
                    for s in strategies]
        drop(context, name)
    return results


def _phase_diskann(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """pgvectorscale StreamingDiskANN, only where the server offers the extension."""
    bench = context.require_bench()
    with bench.connect() as conn:
        version = vectorscale_status(conn)
    if version is None:
        context.diskann = NOT_INSTALLED
        sink.note("  diskann: vectorscale is not available on this server: not installed")
        return []
    drop_vector_competitors(context)
    name = "bench_diskann"
    try:
        with bench.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vectorscale CASCADE")
        build = build_index(context, "diskann", name, psql(
            "CREATE INDEX {name} ON rag.chunk_embeddings USING diskann"
            " ((embedding::vector({d})) vector_cosine_ops) WHERE model_key = {mk}",
            name=name, d=bench.dimension, mk=bench.model_key))
    except psycopg.Error as exc:
        context.diskann = {"status": "failed", "version": version,
                           "error": str(exc).strip().splitlines()[0]}
        sink.note(f"  diskann: build failed: {context.diskann['error']}")
        return []
    results = []
    for search_list in context.config.diskann_search_list:
        strategy = Strategy(
            f"diskann_sl{search_list}", "diskann", f"diskann search_list {search_list}",
            "diskann (streaming post-filter)", search_list, ann_query(bench),
            {"index": name, "query_search_list_size": search_list, "vectorscale": version},
            index_settings(extra=(("diskann.query_search_list_size", search_list),)),
            expect_index=(name,))
        sink.add_total(len(context.dataset.tenants))
        results.append(measure(context, strategy, sink, build["build_s"], build["index_mb"]))
    drop(context, name)
    context.diskann = {"status": "measured", "version": version,
                       "strategies": [r.strategy.id for r in results]}
    return results


def _phase_partition(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """One LIST partition per tenant: exact search in partitions up to the threshold, an HNSW
    index (no filter needed: the partition is the tenant) in the larger ones."""
    config, bench, dataset = context.config, context.require_bench(), context.dataset
    context.timings["copy_partitioned_s"] = load_partitioned_table(bench, dataset)
    indexed: list[str] = []
    build_s = 0.0
    m, ef_construction = config.partition_hnsw
    graph = "" if config.partition_hnsw == (16, 64) else f"m {m} efc {ef_construction} "
    for t, tenant in enumerate(dataset.tenants):
        if tenant.rows <= config.partition_exact_max_rows:
            continue
        name = f"{partition_name(t)}_hnsw"
        info = build_index(context, f"partition_{tenant.name}", name, psql(
            "CREATE INDEX {name} ON bench.{part} USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = {m}, ef_construction = {efc})", name=name, part=partition_name(t),
            m=m, efc=ef_construction), schema="bench")
        build_s += info["build_s"]
        indexed.append(name)
    with bench.connect() as conn:
        size = index_mb(conn, indexed, "bench")
    results = [measure(context, Strategy(
        "partition_exact", "partition", "partition per tenant, exact in every partition",
        "partition per tenant, exact", 0, partition_query(exact=True),
        {"exact_max_rows": "all"}, index_settings(force_index=False)),
        sink, None, None, note="contiguous rows: exact search inside the tenant's partition")]
    for ef in config.partition_ef:
        strategy = Strategy(
            f"partition_ef{ef}", "partition",
            f"partition per tenant (exact <= {config.partition_exact_max_rows:,} rows, "
            f"else HNSW {graph}ef {ef})", f"partition per tenant {graph}".strip(), ef,
            partition_query(),
            {"exact_max_rows": config.partition_exact_max_rows, "m": m,
             "ef_construction": ef_construction, "ef_search": ef, "hnsw_partitions": indexed},
            index_settings(ef_search=ef, force_index=False),
            expect_index=())
        results.append(measure(context, strategy, sink, build_s, size))
    if not config.keep_db:
        with bench.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS bench.items_part")
    return results


PHASE_RUNNERS: dict[str, Callable[[BenchContext, ProgressSink], list[StrategyResult]]] = {
    "exact": _phase_exact, "product": _phase_product, "hnsw": _phase_hnsw,
    "ivfflat": _phase_ivfflat, "halfvec": _phase_halfvec, "binary": _phase_binary,
    "hnsw_extra": _phase_hnsw_extra, "diskann": _phase_diskann, "partition": _phase_partition,
    "plan": phase_plan,
}


