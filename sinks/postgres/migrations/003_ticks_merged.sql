-- tickstream schema v3: the merged feeds (issue 14). ticks_merged holds the ticks each merged
-- stream sent, loaded from the merged topic: the columns of ticks, `symbol` the canonical one,
-- `source` and `seq` those of the source the tick came from. Daily partitions like ticks.
create table if not exists ticks_merged (
  source          text             not null,
  seq             bigint           not null,
  symbol          text             not null,
  time            timestamptz      not null,
  server_time_msc bigint           not null,
  bid             double precision not null,
  ask             double precision not null,
  last            double precision not null,
  volume          bigint           not null,
  volume_real     double precision not null,
  flags           bigint           not null,
  primary key (source, seq, time)
) partition by range (time);

create index if not exists ticks_merged_symbol_time on ticks_merged (symbol, time);

-- Daily partitions ticks_merged_YYYYMMDD, created by the loader for the days it writes there.
create or replace function tickstream_ensure_merged_partitions(from_day date, to_day date) returns void
language plpgsql as $$
declare
  d date := from_day;
  name text;
begin
  perform pg_advisory_xact_lock(hashtext(current_schema() || '.ticks_merged partitions'));
  while d <= to_day loop
    name := 'ticks_merged_' || to_char(d, 'YYYYMMDD');
    if to_regclass(quote_ident(current_schema()) || '.' || name) is null then
      execute format('create table %I partition of ticks_merged for values from (%L) to (%L)', name, (d::timestamp at time zone 'UTC'), ((d + 1)::timestamp at time zone 'UTC'));
    end if;
    d := d + 1;
  end loop;
end $$;

-- Retention of both tables; returns how many daily partitions were dropped.
create or replace function tickstream_drop_partitions_before(before_day date) returns integer
language plpgsql as $$
declare
  r record;
  n integer := 0;
begin
  for r in
    select c.relname, p.relname as parent from pg_inherits i
      join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
    where i.inhparent in ((quote_ident(current_schema()) || '.ticks')::regclass, (quote_ident(current_schema()) || '.ticks_merged')::regclass)
      and c.relname ~ '^ticks(_merged)?_[0-9]{8}$'
  loop
    if to_date(right(r.relname, 8), 'YYYYMMDD') + 1 <= before_day then
      execute format('drop table %I', r.relname);
      n := n + 1;
    end if;
  end loop;
  return n;
end $$;
