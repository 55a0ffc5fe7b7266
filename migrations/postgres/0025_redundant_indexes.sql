-- instances_series_number (series_fk, instance_number) leads with
-- series_fk, so it serves every look-up, join and foreign-key check that
-- instances_series served; the narrower index only cost a b-tree insert,
-- and its pages in the write-ahead log, with every stored instance.
DROP INDEX instances_series;
