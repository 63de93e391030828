-- AEGIS schema, migration 2: monthly partitions of market_data, created on demand.
--
-- aegis_ensure_market_data_month(month) creates the partition market_data_pYYYYMM covering
-- [first ms of the month, first ms of the next month) in UTC, unless it exists. Rows that had
-- already landed in market_data_default for that month are moved into the new partition in
-- the same transaction (PostgreSQL refuses to create a partition whose range the default
-- partition already holds rows for). Returns true when it created the partition.
-- Unqualified names resolve through search_path, so the function works in any schema.

CREATE FUNCTION aegis_ensure_market_data_month(month date) RETURNS boolean
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
    -- Serialise concurrent creators of the same month (feed and backfill may race).
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
END
$fn$;
