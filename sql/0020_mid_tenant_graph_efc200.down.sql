-- 0020 rollback: the 30,000-row step goes back to 0019's graph and ef_search, where it is
-- still the one 0020 set. Tenants promoted meanwhile keep their graphs (ef_construction 200);
-- `rag tenant rebalance` reports them as graph_params_stale and raises their ef_search to 200.
UPDATE rag.partition_graph_params
   SET ef_construction = 64, ef_search = 200,
       note = 'own partition, 30k-100k rows: ef_search 100 gave recall@10 0.964-0.972 at 34k '
              'rows (reports/index/20261203T102227Z, 20261203T104549Z); 200 gave 1.000 at 50k'
 WHERE min_rows = 30000 AND m = 16 AND ef_construction = 200 AND ef_search = 100;
