-- tickstream schema v1. Column names of ticks and bars_1m are a contract: users query them.
create table if not exists ticks (
  source          text             not null,
  seq             bigint           not null,
  symbol          text             not null,
  time            timestamptz      not null,  -- UTC instant of the tick
  server_time_msc bigint           not null,  -- MqlTick.time_msc, broker server clock
  bid             double precision not null,
  ask             double precision not null,
  last            double precision not null,
  volume          bigint           not null,
  volume_real     double precision not null,
  flags           bigint           not null,  -- MqlTick.flags, every bit kept
  -- A unique key on a partitioned table must include the partition column.
  primary key (source, seq, time)
) partition by range (time);

create index if not exists ticks_symbol_time on ticks (symbol, time);

create table if not exists bars_1m (
  source     text             not null,
  symbol     text             not null,
  start      timestamptz      not null,  -- UTC start of the minute
  open       double precision not null,  -- bid OHLC
  high       double precision not null,
  low        double precision not null,
  close      double precision not null,
  tick_count integer          not null,
  spread_min double precision not null,
  spread_max double precision not null,
  spread_avg double precision not null,
  last_open  double precision,           -- last-price OHLC: NULL when the minute had no trade
  last_high  double precision,
  last_low   double precision,
  last_close double precision,
  volume     double precision not null,
  last_seq   bigint           not null,
  primary key (source, symbol, start)
);

-- The Postgres loader's consumed offsets, written in the same transaction as the rows.
-- generation fences a loader that lost its partitions in a rebalance.
create table if not exists sink_offsets (
  consumer_group text   not null,
  topic          text   not null,
  partition      int    not null,
  next_offset    bigint not null,
  generation     bigint not null,
  primary key (consumer_group, topic, partition)
);

-- Daily partitions ticks_YYYYMMDD, created ahead by the loader for the days it is about to write.
create or replace function tickstream_ensure_partitions(from_day date, to_day date) returns void
language plpgsql as $$
declare
  d date := from_day;
  name text;
begin
  perform pg_advisory_xact_lock(hashtext(current_schema() || '.ticks partitions'));
  while d <= to_day loop
    name := 'ticks_' || to_char(d, 'YYYYMMDD');
    if to_regclass(quote_ident(current_schema()) || '.' || name) is null then
      execute format('create table %I partition of ticks for values from (%L) to (%L)', name, (d::timestamp at time zone 'UTC'), ((d + 1)::timestamp at time zone 'UTC'));
    end if;
    d := d + 1;
  end loop;
end $$;

-- Retention: drops daily tick partitions that end before `before_day`; returns how many.
create or replace function tickstream_drop_partitions_before(before_day date) returns integer
language plpgsql as $$
declare
  r record;
  n integer := 0;
begin
  for r in
    select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = (quote_ident(current_schema()) || '.ticks')::regclass and c.relname ~ '^ticks_[0-9]{8}$'
  loop
    if to_date(substr(r.relname, 7), 'YYYYMMDD') + 1 <= before_day then
      execute format('drop table %I', r.relname);
      n := n + 1;
    end if;
  end loop;
  return n;
end $$;
