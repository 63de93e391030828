-- AEGIS schema, migration 1: the ten tables.
--
-- Time convention: every timestamp is an integer number of milliseconds since the Unix epoch,
-- UTC, in a `bigint` column whose name ends in `_ms` (Binance and the ring records speak epoch
-- ms; a bigint copies at full speed and cannot carry a time-zone mistake). Read it as a date
-- with `to_timestamp(x / 1000.0)`.
--
-- Money (prices, quantities, notionals, commissions, PnL) on orders, trades, positions and
-- account state is NUMERIC: exact decimal, as the exchange reports it. market_data keeps
-- double precision on purpose: it is ~160M rows a year of analytics input, never summed into
-- a balance, and float64 is what the feature code computes with.
--
-- Ids of brain candidates (intent_id) are unsigned 64-bit integers, hence numeric(20, 0).
--
-- Every table has a natural key so that the durable writer can replay a batch any number of
-- times (INSERT ... ON CONFLICT), which is what makes "nothing is lost" safe.

CREATE TABLE market_data (
    symbol                  text             NOT NULL,
    timeframe               text             NOT NULL,
    open_time_ms            bigint           NOT NULL,
    open                    double precision NOT NULL,
    high                    double precision NOT NULL,
    low                     double precision NOT NULL,
    close                   double precision NOT NULL,
    volume                  double precision NOT NULL,
    quote_volume            double precision,           -- NULL: the source did not say
    trade_count             bigint,
    taker_buy_volume        double precision,
    taker_buy_quote_volume  double precision,
    flags                   integer          NOT NULL DEFAULT 0,  -- aegis.records BAR_* bits
    -- The primary key is the composite (symbol, timeframe, open_time_ms) index of the design.
    CONSTRAINT market_data_pkey PRIMARY KEY (symbol, timeframe, open_time_ms)
) PARTITION BY RANGE (open_time_ms);

-- Catch-all partition: a bar outside every monthly partition lands here instead of failing
-- the batch; ensure_partitions() later moves such rows into their month.
CREATE TABLE market_data_default PARTITION OF market_data DEFAULT;

CREATE TABLE signals (
    intent_id               numeric(20, 0)   NOT NULL,
    symbol                  text             NOT NULL,
    timeframe               text             NOT NULL,
    decision_time_ms        bigint           NOT NULL,
    direction               smallint         NOT NULL CHECK (direction IN (-1, 0, 1)),
    confidence              double precision NOT NULL,
    predicted_return_pct    double precision NOT NULL,
    model_version           bigint           NOT NULL,
    decision                text             NOT NULL,   -- entered / below_threshold / risk_rejected ...
    -- Seven dedicated feature columns for fast queries; the full vector is in `features`.
    htf_trend               double precision,
    structure_break         double precision,
    fvg_distance_pct        double precision,
    order_block_distance_pct double precision,
    liquidity_sweep         double precision,
    atr_pct                 double precision,
    volume_zscore           double precision,
    features                double precision[] NOT NULL,
    created_at_ms           bigint           NOT NULL,
    CONSTRAINT signals_pkey PRIMARY KEY (intent_id)
);
CREATE INDEX signals_symbol_time_idx ON signals (symbol, decision_time_ms);

CREATE TABLE virtual_positions (
    position_id             numeric(20, 0)   NOT NULL,   -- the intent id that opened it
    symbol                  text             NOT NULL,
    side                    text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    status                  text             NOT NULL CHECK (status IN ('open', 'closed')),
    opened_at_ms            bigint           NOT NULL,
    closed_at_ms            bigint,
    entry_price             numeric          NOT NULL,
    quantity                numeric          NOT NULL,
    notional                numeric          NOT NULL,
    stop_price              numeric,
    take_price              numeric,
    exit_price              numeric,
    exit_reason             text,
    confidence              double precision,
    predicted_return_pct    double precision,
    model_version           bigint           NOT NULL,
    features                double precision[] NOT NULL,
    updated_at_ms           bigint           NOT NULL,   -- newer row wins on replay
    CONSTRAINT virtual_positions_pkey PRIMARY KEY (position_id)
);
CREATE INDEX virtual_positions_open_idx ON virtual_positions (symbol) WHERE status = 'open';

CREATE TABLE virtual_trades (
    trade_id                numeric(20, 0)   NOT NULL,   -- the position's intent id
    symbol                  text             NOT NULL,
    timeframe               text             NOT NULL,
    side                    text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    entry_at_ms             bigint           NOT NULL,
    exit_at_ms              bigint           NOT NULL,
    duration_ms             bigint           NOT NULL,
    entry_price             numeric          NOT NULL,
    exit_price              numeric          NOT NULL,
    close_price             numeric          NOT NULL,   -- last bar close at exit (tracking field)
    quantity                numeric          NOT NULL,
    notional                numeric          NOT NULL,
    gross_return_pct        double precision NOT NULL,
    net_return_pct          double precision NOT NULL,
    commission_paid         numeric          NOT NULL,
    commission_asset        text             NOT NULL,
    slippage_pct            double precision NOT NULL,
    exit_reason             text             NOT NULL,
    stop_pct                double precision,
    take_pct                double precision,
    predicted_return_pct    double precision,
    model_version           bigint           NOT NULL,
    features                double precision[] NOT NULL,
    confidence              double precision,
    position_size_pct       double precision,
    pnl                     numeric          NOT NULL,
    reward_score            double precision,
    created_at_ms           bigint           NOT NULL,
    CONSTRAINT virtual_trades_pkey PRIMARY KEY (trade_id)
);
CREATE INDEX virtual_trades_exit_idx ON virtual_trades (exit_at_ms);
CREATE INDEX virtual_trades_symbol_exit_idx ON virtual_trades (symbol, exit_at_ms);

CREATE TABLE orders (
    -- The intent id rendered as Binance's newClientOrderId: one intent can never become two
    -- orders, whatever is retried.
    client_order_id         text             NOT NULL,
    intent_id               numeric(20, 0)   NOT NULL,
    mode                    text             NOT NULL CHECK (mode IN ('paper', 'live')),
    symbol                  text             NOT NULL,
    side                    text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type              text             NOT NULL,
    time_in_force           text,
    quantity                numeric,
    quote_order_qty         numeric,
    price                   numeric,
    stop_price              numeric,
    status                  text             NOT NULL,   -- Binance order status, or SUBMITTING
    exchange_order_id       bigint,
    executed_qty            numeric          NOT NULL DEFAULT 0,
    cumulative_quote_qty    numeric          NOT NULL DEFAULT 0,
    reject_reason           text,
    detail                  jsonb            NOT NULL DEFAULT '{}'::jsonb,
    created_at_ms           bigint           NOT NULL,
    updated_at_ms           bigint           NOT NULL,   -- newer row wins on replay
    CONSTRAINT orders_pkey PRIMARY KEY (client_order_id)
);
CREATE INDEX orders_symbol_created_idx ON orders (symbol, created_at_ms);
CREATE INDEX orders_intent_idx ON orders (intent_id);

CREATE TABLE trades (
    symbol                  text             NOT NULL,
    trade_id                bigint           NOT NULL,   -- exchange trade id (paper: synthetic)
    mode                    text             NOT NULL CHECK (mode IN ('paper', 'live')),
    client_order_id         text             NOT NULL,   -- no FK: fills and orders are written
    exchange_order_id       bigint,                      -- by separate batches, in any order
    side                    text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    price                   numeric          NOT NULL,
    quantity                numeric          NOT NULL,
    quote_qty               numeric          NOT NULL,
    commission              numeric          NOT NULL,
    commission_asset        text             NOT NULL,
    is_maker                boolean          NOT NULL,
    executed_at_ms          bigint           NOT NULL,
    CONSTRAINT trades_pkey PRIMARY KEY (symbol, trade_id)
);
CREATE INDEX trades_client_order_idx ON trades (client_order_id);

CREATE TABLE ml_models (
    model_version           bigint           NOT NULL,
    status                  text             NOT NULL CHECK (status IN ('champion', 'challenger', 'retired')),
    model                   bytea            NOT NULL,
    feature_list_hash       text             NOT NULL,
    feature_names           text[]           NOT NULL,
    train_start_ms          bigint           NOT NULL,
    train_end_ms            bigint           NOT NULL,
    train_rows              bigint           NOT NULL,
    metrics                 jsonb            NOT NULL DEFAULT '{}'::jsonb,
    created_at_ms           bigint           NOT NULL,
    updated_at_ms           bigint           NOT NULL,
    CONSTRAINT ml_models_pkey PRIMARY KEY (model_version)
);
-- At most one champion at any time: promote and retire in one transaction.
CREATE UNIQUE INDEX ml_models_one_champion_idx ON ml_models (status) WHERE status = 'champion';

CREATE TABLE experience_buffer (
    source                  text             NOT NULL,   -- virtual_trade / backfill / live_trade
    symbol                  text             NOT NULL,
    timeframe               text             NOT NULL,
    decision_time_ms        bigint           NOT NULL,
    features                double precision[] NOT NULL,
    label                   double precision NOT NULL,   -- realised net % return
    weight                  double precision NOT NULL DEFAULT 1,
    model_version           bigint,
    created_at_ms           bigint           NOT NULL,
    CONSTRAINT experience_buffer_pkey PRIMARY KEY (source, symbol, timeframe, decision_time_ms)
);
CREATE INDEX experience_buffer_created_idx ON experience_buffer (created_at_ms);

CREATE TABLE account_state (
    account                 text             NOT NULL,   -- paper / live
    ts_ms                   bigint           NOT NULL,
    equity                  numeric          NOT NULL,
    cash                    numeric          NOT NULL,
    peak_equity             numeric          NOT NULL,
    open_positions          integer          NOT NULL,
    balances                jsonb            NOT NULL DEFAULT '{}'::jsonb,  -- asset -> {free, locked}
    CONSTRAINT account_state_pkey PRIMARY KEY (account, ts_ms)
);

CREATE TABLE kernel_events (
    event_id                uuid             NOT NULL,   -- made by the writer: replay-safe
    ts_ms                   bigint           NOT NULL,
    process                 text             NOT NULL,
    pid                     integer,
    event                   text             NOT NULL,   -- start / exit / restart / stall / ...
    reason                  text             NOT NULL,
    exit_code               integer,
    detail                  jsonb            NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT kernel_events_pkey PRIMARY KEY (event_id)
);
CREATE INDEX kernel_events_ts_idx ON kernel_events (ts_ms);
CREATE INDEX kernel_events_process_ts_idx ON kernel_events (process, ts_ms);
