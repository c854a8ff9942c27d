-- 0015 rollback: the large tenants' graph parameters of 0014 again, where 0015 set them.
-- Graphs built meanwhile keep their parameters until the tenant is next promoted.
UPDATE rag.partition_graph_params
   SET m = 24, ef_construction = 96, ef_search = 200,
       note = 'own partition, 170k-250k rows: recall@10 >= 0.98 needs m 24'
 WHERE min_rows = 100000 AND m = 16 AND ef_construction = 200 AND ef_search = 200;
