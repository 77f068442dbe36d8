/**
 * The formats of the history API (docs/history.md). CSV and JSON lines are written by Postgres
 * itself (`HistoryPage.text`); the Apache Arrow IPC stream is encoded here, batch by batch (the
 * schema, one record batch per fetched batch, the end marker) so a response never holds more
 * than one batch. Arrow types: times `Timestamp(MILLISECOND, "UTC")`; prices float64; seq,
 * volume, server_time_msc and last_seq int64; flags and tick_count int32; source and symbol
 * utf8; a bar's `last_*` nullable (null when the minute had no trade).
 */
import {
  type DataType,
  Field,
  Float64,
  Int32,
  Int64,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  TimestampMillisecond,
  Utf8,
  vectorFromArray,
} from 'apache-arrow';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import {
  type ColumnType,
  HISTORY_COLUMNS,
  type HistoryKind,
  type HistoryRow,
} from '../sinks/postgres/history.js';

export const HISTORY_FORMATS = ['csv', 'jsonl', 'arrow'] as const;
export type HistoryFormat = (typeof HISTORY_FORMATS)[number];

export const CONTENT_TYPES: Record<HistoryFormat, string> = {
  csv: 'text/csv; charset=utf-8',
  jsonl: 'application/x-ndjson',
  arrow: 'application/vnd.apache.arrow.stream',
};

export interface RowEncoder {
  head(): Uint8Array;
  rows(rows: readonly HistoryRow[]): Uint8Array;
  tail(): Uint8Array;
}

function arrowType(type: ColumnType): DataType {
  switch (type) {
    case 'text':
      return new Utf8();
    case 'int64':
      return new Int64();
    case 'int32':
      return new Int32();
    case 'time':
      return new TimestampMillisecond('UTC');
    default:
      return new Float64();
  }
}

/** The Arrow schema of a kind: the Postgres column names, typed. */
export function arrowSchema(kind: HistoryKind): Schema {
  return new Schema(
    HISTORY_COLUMNS[kind].map(([name, type]) => new Field(name, arrowType(type), type === 'float64?')),
  );
}

/** Arrow IPC end-of-stream marker: continuation token and a zero length. */
const ARROW_EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/** Arrow IPC stream bytes: the schema message, a record batch message per batch of rows, the end marker. */
export function arrowEncoder(kind: HistoryKind): RowEncoder {
  const schema = arrowSchema(kind);
  const cols = HISTORY_COLUMNS[kind];
  // The schema message alone: a stream writer's output for no batches, less the EOS marker.
  const empty = new RecordBatchStreamWriter();
  empty.reset(undefined, schema);
  empty.finish();
  const all = empty.toUint8Array(true);
  const schemaBytes = all.slice(0, all.length - ARROW_EOS.length);
  return {
    head: () => schemaBytes,
    rows: (rows) => {
      const children = cols.map(([, type], c) => {
        const values = rows.map((r) => r[c]);
        if (type === 'int64')
          return makeData({ type: new Int64(), data: BigInt64Array.from(values as number[], BigInt) });
        if (type === 'int32')
          return makeData({ type: new Int32(), data: Int32Array.from(values as number[]) });
        if (type === 'float64')
          return makeData({ type: new Float64(), data: Float64Array.from(values as number[]) });
        return vectorFromArray(values, arrowType(type)).data[0] as ReturnType<typeof makeData>;
      });
      const batch = new RecordBatch(
        schema,
        makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }),
      );
      // A writer per batch: its output is the schema message, then this batch's message.
      const w = new RecordBatchStreamWriter();
      w.write(batch);
      const out = w.toUint8Array(true);
      if (!sameStart(out, schemaBytes))
        throw new TickstreamError(ErrorCode.INTERNAL, 'arrow: a batch was written with another schema');
      return out.subarray(schemaBytes.length);
    },
    tail: () => ARROW_EOS,
  };
}

function sameStart(a: Uint8Array, prefix: Uint8Array): boolean {
  if (a.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}
