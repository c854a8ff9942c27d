-- The graph of a large tenant's own partition, re-measured (reports/index/20261202T042950Z:
-- 500,000 vectors, `rag bench index --phase partition --partition-hnsw 16,200`, shared_buffers
-- holding the graphs): m 16 / ef_construction 200 at ef_search 200 reaches recall@10 0.986
-- (170,000 rows) and 0.994 (250,000 rows) at p95 7.1 and 6.0 ms. The same graph at
-- ef_search 100 stays under 0.98 on the 170,000-row tenant (0.975); m 24 / ef_construction
-- 96, 0014's guess from a benchmark on one shared graph, was not measured in a partition.
-- A higher ef_construction costs build time once per promotion (184 s for 250,000 rows on
-- 2 cores), not query time. Rows an operator changed since 0014 are left alone.
UPDATE rag.partition_graph_params
   SET m = 16, ef_construction = 200, ef_search = 200,
       note = 'own partition, 170k-250k rows: recall@10 >= 0.986 at p95 <= 7.1 ms '
              '(reports/index/20261202T042950Z)'
 WHERE min_rows = 100000 AND m = 24 AND ef_construction = 96 AND ef_search = 200;
