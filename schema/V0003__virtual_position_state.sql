-- AEGIS schema, migration 3: the full exit-rule state of a paper position.
--
-- virtual_positions keeps the reportable columns (entry, quantity, stop/take prices, exit);
-- restarting the executor also needs what the exit rules carry bar by bar (peak high for the
-- trailing stop, bars held, last processed bar, mark price) and what the position was opened
-- under (fill price, commission and slippage rates, exit distances, time exit). `state` holds
-- aegis.paper.positions.PaperPosition.to_record() as JSON, so a restart rebuilds the very
-- position the executor had, and a bar replayed after the restart is recognised as a replay.
ALTER TABLE virtual_positions ADD COLUMN state jsonb NOT NULL DEFAULT '{}'::jsonb;
