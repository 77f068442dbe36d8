-- tickstream schema v2: offsets bound to the log they count in, and a dead-letter table.
--
-- topic_id: the Kafka topic id (base64) of the log `next_offset` counts in. A broker whose state
-- was wiped, or a topic deleted and re-created, starts a new log under the same name whose
-- offsets mean other records; the loader compares this id on every assignment and refuses to
-- load a partition whose log changed. NULL: a row written before v2, bound on its next claim.
alter table sink_offsets add column if not exists topic_id text;

-- Journal records (or the ticks of one) the loader could not load and set aside instead of
-- retrying forever: a record spanning too many UTC days, ticks dated outside the sane window,
-- or a batch that kept failing with a data error. Written in the same transaction as the
-- offset that moves past them, so nothing is lost silently: `tickstream verify` reports these
-- seqs as parked, apart from missing ones. `record` is the Kafka record value as journaled.
create table if not exists ticks_parked (
  topic        text        not null,
  partition    int         not null,
  kafka_offset bigint      not null,
  kind         text        not null,  -- 'days', 'time-window' or 'retries'
  source       text        not null,
  seqs         bigint[]    not null,  -- the parked seqs (all of the record's, or the out-of-window ones)
  error        text        not null,
  record       bytea       not null,
  parked_at    timestamptz not null default now(),
  primary key (topic, partition, kafka_offset, kind)
);

create index if not exists ticks_parked_source on ticks_parked (source);
