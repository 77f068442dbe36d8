/** @tickstream/client: the websocket client and the journal record decoders. */
export {
  type ClientEvents,
  type ClientOptions,
  type ConflatedEvent,
  type ReconnectOptions,
  type ReplayEvent,
  type ReplayRequest,
  type TicksEvent,
  TickstreamClient,
  type WebSocketConstructor,
  type WebSocketLike,
} from './client.js';
export {
  type Bar,
  decodeBarRecord,
  decodeTickColumns,
  decodeTicks,
  type RecordTick,
  type Tick,
  type TickColumns,
  tickObjects,
} from './records.js';
