-- tickstream schema v5: ticks and ticks_merged keep one btree, not two (issue 18).
--
-- Each btree costs the load about as much as the table itself (bench/sinks/postgres-layouts.ts,
-- bench/README.md: Postgres CPU per COPYed row 1.1 µs unindexed, 4.0 µs with v1's primary key
-- and (symbol, time) btree, 3.0 µs with this layout). The users' queries (ticks of a symbol in
-- a time range, the newest tick of a symbol, the history API) need the btree on
-- (symbol, time); they keep it.
--
-- The primary key (source, seq, time) goes. Its uniqueness was checked per daily partition
-- only, and the loader already loads every journaled tick exactly once (its Kafka offsets are
-- written in the same transaction as the rows); `tickstream verify` checks it. Lookups by seq
-- (a source's seqs, `rebuild`'s delete) go through a BRIN index on seq instead: within a
-- partition each source's seqs rise with time, so a block range holds a few narrow seq
-- intervals, one per source, which the minmax-multi opclass keeps apart (a source far ahead
-- of the others in seqs does not widen every range). 32 pages (about 2000 rows) per range: a
-- lookup of a few seqs reads a few dozen pages. Ranges are summarised by (auto)vacuum, which
-- Postgres runs on inserts too; until then the newest ranges are read whole.
--
-- Existing partitions are changed in place: dropping the parents' keys drops the partitions'
-- keys, and an index created on a partitioned table is created on every partition.
alter table ticks drop constraint if exists ticks_pkey;
alter table ticks_merged drop constraint if exists ticks_merged_pkey;

create index if not exists ticks_seq on ticks using brin (seq int8_minmax_multi_ops) with (pages_per_range = 32);
create index if not exists ticks_merged_seq on ticks_merged using brin (seq int8_minmax_multi_ops) with (pages_per_range = 32);
