-- AEGIS schema, migration 4: make aegis_ensure_market_data_month safe under concurrency.
--
-- Two sessions creating the same month at once could both miss the partition in their
-- catalog cache (an advisory lock does not refresh it) and the second CREATE then failed with
-- duplicate_table. The month exists either way, which is all the caller asked for: treat
-- that error as "already there". Same contract as V0002 otherwise.

CREATE OR REPLACE FUNCTION aegis_ensure_market_data_month(month date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    first_day date := date_trunc('month', month)::date;
    lo bigint := (extract(epoch FROM first_day::timestamp AT TIME ZONE 'UTC') * 1000)::bigint;
    hi bigint := (extract(epoch FROM (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC') * 1000)::bigint;
    part text := 'market_data_p' || to_char(first_day, 'YYYYMM');
    stray bigint;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('aegis_market_data_partition'), (lo / 86400000)::int);
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO stray FROM market_data_default
     WHERE open_time_ms >= lo AND open_time_ms < hi;
    IF stray = 0 THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF market_data FOR VALUES FROM (%s) TO (%s)',
                       part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I (LIKE market_data INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM market_data_default WHERE open_time_ms >= %s'
                       ' AND open_time_ms < %s RETURNING *) INSERT INTO %I SELECT * FROM moved',
                       lo, hi, part);
        EXECUTE format('ALTER TABLE market_data ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       part, lo, hi);
        RAISE NOTICE 'aegis: moved % rows of % from market_data_default', stray, part;
    END IF;
    RETURN true;
EXCEPTION
    WHEN duplicate_table THEN
        RETURN false;  -- created meanwhile by another session
END
$fn$;
