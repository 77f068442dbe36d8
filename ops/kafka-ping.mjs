#!/usr/bin/env node
// Asks a Kafka broker for cluster metadata over a raw socket (Metadata v1, no topics) and exits 0
// when it answers with at least one broker. No client library: it runs before `npm ci` has, and
// it tells "a Kafka broker answers" apart from "something else holds the port".
// Usage: node ops/kafka-ping.mjs [host] [port] [timeoutMs]
import net from 'node:net';

const host = process.argv[2] ?? '127.0.0.1';
const port = Number(process.argv[3] ?? 9092);
const timeoutMs = Number(process.argv[4] ?? 2000);

const clientId = Buffer.from('tickstream-ping');
// Request: size | api_key=3 | api_version=1 | correlation_id | client_id | topics=-1 (none asked... -1 = all)
const body = Buffer.alloc(2 + 2 + 4 + 2 + clientId.length + 4);
let o = 0;
o = body.writeInt16BE(3, o);
o = body.writeInt16BE(1, o);
o = body.writeInt32BE(0x7473, o);
o = body.writeInt16BE(clientId.length, o);
o += clientId.copy(body, o);
body.writeInt32BE(0, o); // empty topic array: brokers and controller only
const request = Buffer.concat([Buffer.from([0, 0, 0, 0]), body]);
request.writeInt32BE(body.length, 0);

const socket = net.connect({ host, port });
let received = Buffer.alloc(0);
const fail = (why) => {
  process.stderr.write(`${why}\n`);
  socket.destroy();
  process.exit(1);
};
socket.setTimeout(timeoutMs, () => fail(`no Kafka answer from ${host}:${port} within ${timeoutMs} ms`));
socket.on('error', (err) => fail(`cannot reach ${host}:${port}: ${err.code ?? err.message}`));
socket.on('connect', () => socket.write(request));
socket.on('data', (chunk) => {
  received = Buffer.concat([received, chunk]);
  if (received.length < 4) return;
  const size = received.readInt32BE(0);
  if (size < 8 || size > 1 << 20) fail(`${host}:${port} answered, but not like a Kafka broker`);
  if (received.length < 4 + size) return;
  const correlation = received.readInt32BE(4);
  const brokers = received.readInt32BE(8);
  if (correlation !== 0x7473 || brokers < 1) fail(`${host}:${port} answered, but not like a Kafka broker`);
  socket.end();
  process.exit(0);
});
