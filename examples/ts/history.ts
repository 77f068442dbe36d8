// Ticks of a symbol in a UTC range [FROM, TO) from the history API on serve's HTTP port
// (`GET /api/v1/ticks`, JSON lines, streamed): each line is printed as it arrives. A page holds at
// most LIMIT rows (default: the server's); the next page is asked for with the X-Next-Cursor
// header of the page before, until a page comes without it.
//   node dist/examples/ts/history.js SYMBOL FROM TO [LIMIT]      (FROM, TO: ISO-8601)
// TICKSTREAM_HTTP_URL (default http://127.0.0.1:5001), TICKSTREAM_TOKEN (when serve has tokens).
const [symbol = 'EURUSD', from = '1970-01-01T00:00:00Z', to = '3000-01-01T00:00:00Z', limit] =
  process.argv.slice(2);
const base = process.env['TICKSTREAM_HTTP_URL'] ?? 'http://127.0.0.1:5001';
const token = process.env['TICKSTREAM_TOKEN'];

const print = (line: string) => {
  if (!line) return;
  const t = JSON.parse(line) as {
    source: string;
    seq: number;
    time: number | string;
    bid: number;
    ask: number;
  };
  console.log(t.source, t.seq, symbol, new Date(t.time).toISOString(), t.bid, t.ask);
};
let cursor: string | null = null;
do {
  const query = new URLSearchParams({ symbol, from, to, format: 'jsonl' });
  if (limit) query.set('limit', limit);
  if (cursor) query.set('cursor', cursor);
  const res = await fetch(`${base}/api/v1/ticks?${query}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  if (!res.ok || !res.body) {
    console.error(`GET /api/v1/ticks: ${res.status} ${await res.text()}`);
    process.exit(1);
  }
  let rest = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    const lines = (rest + decoder.decode(chunk, { stream: true })).split('\n');
    rest = lines.pop() ?? '';
    lines.forEach(print);
  }
  print(rest);
  cursor = res.headers.get('x-next-cursor'); // none on the last page
} while (cursor);
