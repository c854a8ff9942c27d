-- Own-partition tenants of 30,000 to 100,000 rows search with ef_search 200. At ef_search
-- 100 (0014's row from 0 rows) the 34,000-row tenant of `rag bench index --phase plan
-- --vectors 100000` reached recall@10 0.964 and 0.972 in two runs (reports/index/
-- 20261203T102227Z and 20261203T104549Z), under the goal of 0.98, while its 5,000- and
-- 10,000-row tenants stayed at >= 0.994. ef_search 200 on the same graphs (m 16 / ef_construction 64)
-- reached recall@10 1.000 on the 50,000-row tenant at p95 5.3 ms (reports/index/
-- 20261203T080441Z, phase partition), against 3.0 ms at ef_search 100. The graph is
-- unchanged (ef_search is read at search time): `rag tenant rebalance` moves promoted
-- tenants in this range to the new ef_search (its "tune" action). A row an operator
-- already keeps at 30,000 is left alone.
INSERT INTO rag.partition_graph_params (min_rows, m, ef_construction, ef_search, note)
VALUES (30000, 16, 64, 200,
        'own partition, 30k-100k rows: ef_search 100 gave recall@10 0.964-0.972 at 34k rows '
        '(reports/index/20261203T102227Z, 20261203T104549Z); 200 gave 1.000 at 50k')
ON CONFLICT (min_rows) DO NOTHING;
