/**
 * The live status page on the HTTP port: one self-contained HTML document (no build step, no
 * external assets, works offline) that polls /status every second and /metrics every two, and
 * keeps the last five minutes in the browser for its small charts. It costs the bridge two HTTP
 * answers per open page per two seconds, nothing on the data path.
 *
 * /status grows while other parts add fields: everything is read defensively, a missing value
 * shows as "–". `data-source`/`data-field` attributes are for test/ops/status-page.test.ts.
 * String.raw keeps the page script's backslashes; the script avoids template literals.
 */
export const statusPageHtml = String.raw`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickstream</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 6px} .muted{color:#777}
table{border-collapse:collapse} td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left} .ok{color:#1a7f37} .bad{color:#cf222e}
canvas{vertical-align:middle} #charts{margin-top:14px} .chart{display:inline-block;margin:0 24px 8px 0} .chart div{font-size:12px;color:#777}
</style></head><body>
<h1>tickstream <span id="ready" class="muted">…</span></h1>
<div class="muted" id="meta"></div>
<div id="charts">
<div class="chart"><div>ticks/s committed to Kafka (5 min)</div><canvas id="chart-committed" width="360" height="70"></canvas></div>
<div class="chart"><div>uncommitted ticks (5 min)</div><canvas id="chart-queued" width="360" height="70"></canvas></div>
</div>
<h2>Sources</h2>
<table id="sources"></table>
<h2>Merged feeds</h2>
<table id="feeds"></table>
<h2>Sinks</h2>
<table id="sinks"></table>
<h2>Postgres loader partitions</h2>
<table id="loader"></table>
<h2>Totals</h2>
<table id="totals"></table>
<script>
var HISTORY = 300;
var series = {};
var last = { status: null, statusAt: 0, metrics: null, metricsAt: 0, loaderLagS: undefined };
var rates = {};

function esc(t) { return String(t).replace(/[&<>"]/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
function fmt(n, unit) {
  if (typeof n !== 'number' || !isFinite(n)) return '–';
  return n.toLocaleString('en-US', { maximumFractionDigits: 1 }) + (unit || '');
}
function push(key, value) {
  var s = series[key] || (series[key] = []);
  s.push(value);
  if (s.length > HISTORY) s.shift();
  return s;
}
function draw(canvas, values) {
  if (!canvas || !canvas.getContext) return;
  var g = canvas.getContext('2d');
  var w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#eee'; g.strokeRect(0.5, 0.5, w - 1, h - 1);
  var max = 0;
  for (var i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  if (values.length < 2) return;
  g.strokeStyle = '#0969da'; g.lineWidth = 1.5; g.beginPath();
  for (var j = 0; j < values.length; j++) {
    var x = (w - 2) * (j + HISTORY - values.length) / (HISTORY - 1) + 1;
    var y = h - 3 - (max > 0 ? (h - 6) * values[j] / max : 0);
    if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
  }
  g.stroke();
  g.fillStyle = '#777'; g.font = '10px system-ui,sans-serif'; g.fillText(fmt(max), 4, 11);
}
function rate(key, value, seconds) {
  var prev = rates[key];
  rates[key] = value;
  return typeof prev === 'number' && typeof value === 'number' && seconds > 0 ? Math.max(0, (value - prev) / seconds) : undefined;
}

function renderStatus(s, seconds) {
  var ready = document.getElementById('ready');
  ready.textContent = s.ready ? 'ready' : 'NOT READY (journal unavailable)';
  ready.className = s.ready ? 'ok' : 'bad';
  document.getElementById('meta').textContent = 'instance ' + (s.instanceId == null ? '–' : s.instanceId) +
    ', up ' + fmt(s.uptimeS, ' s') + ', RSS ' + fmt(s.rssMb, ' MB');
  var totals = s.totals && typeof s.totals === 'object' ? s.totals : {};
  document.getElementById('totals').innerHTML = Object.keys(totals).map(function (k) {
    var v = totals[k];
    return '<tr><td>' + esc(k) + '</td><td>' + (typeof v === 'number' ? fmt(v) : esc(v == null ? '–' : v)) + '</td></tr>';
  }).join('');
  if (typeof totals['queued ticks (uncommitted)'] === 'number')
    draw(document.getElementById('chart-queued'), push('queued', totals['queued ticks (uncommitted)']));

  var rows = '<tr><th>source</th><th>connected</th><th>ticks/s</th><th>last 5 min</th><th>ticks</th><th>next seq</th>' +
    '<th>committed seq</th><th>last tick age</th><th>time zone rule</th><th>terminal reports</th></tr>';
  var sources = Array.isArray(s.sources) ? s.sources : [];
  sources.forEach(function (x, i) {
    var perS = rate('source:' + x.source, x.ticks, seconds);
    if (perS !== undefined) push('source:' + x.source, perS);
    var fromTerminal = x.timeZoneRuleFrom === 'terminal';
    var rule = x.timeZoneRule == null ? '–' : x.timeZoneRule + (fromTerminal ? ' (the terminal\'s: no rule)' : '');
    var reports = x.clockProblem
      ? '<td class="bad" title="' + esc(x.clockProblem) + '">' + esc((x.reportedOffset == null ? '–' : x.reportedOffset) + ': REFUSED, see the log') + '</td>'
      : '<td>' + esc(x.reportedOffset == null ? '–' : x.reportedOffset) + '</td>';
    rows += '<tr data-source="' + esc(x.source) + '"><td>' + esc(x.source) + '</td>' +
      '<td class="' + (x.connected ? 'ok' : 'bad') + '">' + (x.connected == null ? '–' : x.connected ? 'yes' : 'no') + '</td>' +
      '<td data-field="rate">' + fmt(perS) + '</td>' +
      '<td><canvas id="spark-' + i + '" width="120" height="22"></canvas></td>' +
      '<td data-field="ticks">' + fmt(x.ticks) + '</td><td>' + fmt(x.nextSeq) + '</td><td>' + fmt(x.committedSeq) + '</td>' +
      '<td>' + fmt(x.lastTickAgeS, ' s') + '</td><td' + (fromTerminal ? ' title="no time zone rule configured for this source: its ticks use the offset its terminal reports"' : '') +
      '>' + esc(rule) + '</td>' + reports + '</tr>';
  });
  document.getElementById('sources').innerHTML = rows;
  sources.forEach(function (x, i) { draw(document.getElementById('spark-' + i), series['source:' + x.source] || []); });

  var feeds = Array.isArray(s.feeds) ? s.feeds : [];
  document.getElementById('feeds').innerHTML = !feeds.length ? '<tr><td>no feed groups configured</td></tr>' :
    '<tr><th>symbol</th><th>policy</th><th>follows</th><th>why</th><th>members (health, lag)</th></tr>' +
    feeds.map(function (f) {
      var members = (Array.isArray(f.members) ? f.members : []).map(function (m) {
        return esc(m.source + ':' + m.symbol) + ' ' + (m.healthy ? 'ok' : esc(m.problem == null ? '–' : m.problem)) +
          (typeof m.lagMs === 'number' ? ' ' + fmt(m.lagMs / 1000, ' s') : '');
      }).join(', ');
      return '<tr data-feed="' + esc(f.symbol) + '"><td>' + esc(f.symbol) + '</td><td>' + esc(f.policy == null ? '–' : f.policy) +
        '</td><td data-field="active" class="' + (f.healthy ? 'ok' : 'bad') + '">' + esc(f.active == null ? '–' : f.active) +
        '</td><td data-field="why">' + esc(f.why == null ? '–' : f.why) + '</td><td style="text-align:left">' + members + '</td></tr>';
    }).join('');

  var loader = Array.isArray(s.loader) ? s.loader : null;
  last.loaderLagS = loader ? loader.reduce(function (a, p) { return typeof p.lagSeconds === 'number' && p.lagSeconds > a ? p.lagSeconds : a; }, 0) : undefined;
  document.getElementById('loader').innerHTML = !loader ? '<tr><td>no loader runs in this process</td></tr>' :
    '<tr><th>partition</th><th>state</th><th>next offset</th><th>records behind</th><th>seconds behind</th><th>problem</th></tr>' +
    loader.map(function (p) {
      return '<tr><td>' + esc(p.partition) + '</td><td class="' + (p.state === 'blocked' ? 'bad' : 'ok') + '">' + esc(p.state == null ? '–' : p.state) +
        '</td><td>' + fmt(p.nextOffset) + '</td><td>' + fmt(p.lagRecords) + '</td><td>' + fmt(p.lagSeconds, ' s') +
        '</td><td style="text-align:left">' + esc(p.problem == null ? '' : p.problem) + '</td></tr>';
    }).join('');
}

// Sums every series of each metric family in a Prometheus text exposition.
function parseMetrics(text) {
  var sums = {};
  text.split('\n').forEach(function (line) {
    if (!line || line.charAt(0) === '#') return;
    var brace = line.indexOf('{'), space = line.lastIndexOf(' ');
    var name = line.slice(0, brace >= 0 && brace < space ? brace : space);
    var value = Number(line.slice(space + 1));
    if (isFinite(value)) sums[name] = (sums[name] || 0) + value;
  });
  return sums;
}

function renderMetrics(m, seconds) {
  function r(name) { return rate('metric:' + name, m[name], seconds); }
  var committed = r('tickstream_ticks_committed_total');
  if (committed !== undefined) draw(document.getElementById('chart-committed'), push('committed', committed));
  var sinks = [
    ['Kafka journal', committed, m.tickstream_queued_ticks, undefined, m.tickstream_ready === 1 ? 'ready' : m.tickstream_ready === 0 ? 'NOT READY' : undefined],
    ['Redis', r('tickstream_redis_ticks_written_total'), m.tickstream_redis_queued_ticks, m.tickstream_redis_dropped_ticks_total,
      m.tickstream_redis_connected === 1 ? 'connected' : m.tickstream_redis_connected === 0 ? 'DISCONNECTED' : undefined],
    ['Websockets', r('tickstream_ws_ticks_sent_total'), undefined,
      m.tickstream_ws_conflated_ticks_total === undefined ? undefined : m.tickstream_ws_conflated_ticks_total + (m.tickstream_ws_slow_disconnects_total || 0),
      m.tickstream_ws_clients === undefined ? undefined : fmt(m.tickstream_ws_clients) + ' clients'],
    ['Postgres loader', r('tickstream_loader_rows_total'), undefined, undefined,
      last.loaderLagS === undefined ? undefined : 'lag ' + fmt(last.loaderLagS, ' s') +
        (m.tickstream_loader_errors_total ? ', ' + fmt(m.tickstream_loader_errors_total) + ' errors' : '')],
  ];
  document.getElementById('sinks').innerHTML =
    '<tr><th>sink</th><th>rows or ticks/s</th><th>queued</th><th>dropped, conflated</th><th>state</th></tr>' +
    sinks.map(function (k) {
      var state = k[4] === undefined ? '–' : k[4];
      var bad = /NOT|DISCONNECTED|errors/.test(state);
      return '<tr data-sink="' + esc(k[0]) + '"><td>' + esc(k[0]) + '</td><td>' + fmt(k[1]) + '</td><td>' + fmt(k[2]) +
        '</td><td>' + fmt(k[3]) + '</td><td class="' + (bad ? 'bad' : 'ok') + '">' + esc(state) + '</td></tr>';
    }).join('');
}

async function pollStatus() {
  try {
    var s = await (await fetch('/status')).json();
    var now = Date.now();
    renderStatus(s, last.statusAt ? (now - last.statusAt) / 1000 : 0);
    last.statusAt = now;
  } catch (e) {
    document.getElementById('ready').textContent = 'unreachable';
    document.getElementById('ready').className = 'bad';
  }
}
async function pollMetrics() {
  try {
    var m = parseMetrics(await (await fetch('/metrics')).text());
    var now = Date.now();
    renderMetrics(m, last.metricsAt ? (now - last.metricsAt) / 1000 : 0);
    last.metricsAt = now;
  } catch (e) { /* /status shows "unreachable" already */ }
}
pollStatus(); pollMetrics();
setInterval(pollStatus, 1000);
setInterval(pollMetrics, 2000);
</script></body></html>`;
