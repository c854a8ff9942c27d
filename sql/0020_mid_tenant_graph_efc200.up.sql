-- Own-partition tenants of 30,000 to 100,000 rows get a better graph instead of a wider search:
-- m 16 / ef_construction 200 at ef_search 100, where 0019 kept ef_construction 64 and doubled
-- ef_search to 200. Measured on the same data in one session (`rag bench index --phase
-- partition --vectors 100000 --queries-per-tenant 50`, reports/index/20261203T155401Z with
-- `--partition-hnsw 16,200` and 20261203T155554Z with `16,64`), the 34,000-row tenant reached
--   ef_construction  64, ef_search 100: recall@10 0.968, p95 4.6 ms (CPU 3.9)
--   ef_construction  64, ef_search 200: recall@10 0.992, p95 6.2 ms (CPU 5.6)
--   ef_construction 200, ef_search 100: recall@10 0.992, p95 4.1 ms (CPU 3.6)
-- and the 50,000-row tenant 0.996 / 1.000 / 1.000. At 500,000 vectors 0019's ef_search 200
-- put the 50,000-row tenant at p95 11.9 ms through rag.search_chunks (reports/index/
-- 20261203T120654Z), over the goal of 10 ms. The better graph costs build time once per
-- promotion (65.3 against 31.2 s for the two graphs, 84,000 rows, 2 cores), not query time.
-- A tenant already promoted with the old graph keeps its ef_search 200 (`rag tenant
-- rebalance` lowers ef_search only on a graph built with the table's m / ef_construction);
-- a demotion and promotion rebuilds it. A row an operator changed since 0019 is left alone.
UPDATE rag.partition_graph_params
   SET ef_construction = 200, ef_search = 100,
       note = 'own partition, 30k-100k rows: ef_construction 200 at ef_search 100 gave '
              'recall@10 0.992 at 34k rows, p95 4.1 ms (reports/index/20261203T155401Z)'
 WHERE min_rows = 30000 AND m = 16 AND ef_construction = 64 AND ef_search = 200;
