-- AEGIS schema, migration 5: the end of each training row's label horizon.
--
-- Walk-forward validation purges every training row whose label horizon [decision, exit]
-- overlaps the validation window. Without the stored exit time the trainer must assume the
-- longest possible horizon (decision + timeframe + time exit), which is safe but throws away
-- rows that closed early; with it the purge is exact. NULL for rows written before this column.
ALTER TABLE experience_buffer ADD COLUMN exit_time_ms bigint;
