-- 0019 rollback: the 30,000-row step goes, where it is still the one 0019 added. Tenants
-- tuned to it keep ef_search 200 until `rag tenant rebalance` tunes them back.
DELETE FROM rag.partition_graph_params
 WHERE min_rows = 30000 AND m = 16 AND ef_construction = 64 AND ef_search = 200
   AND note LIKE 'own partition, 30k-100k rows:%';
