/**
 * The live status page on the HTTP port: one self-contained HTML document that polls /status
 * (JSON) every second. No build step, no external assets.
 */
export const statusPageHtml = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickstream</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .muted{color:#777}
table{border-collapse:collapse;margin-top:12px} td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left} .ok{color:#1a7f37} .bad{color:#cf222e}
</style></head><body>
<h1>tickstream <span id="ready" class="muted">…</span></h1>
<div class="muted" id="meta"></div>
<table id="totals"></table>
<h2 style="font-size:16px;margin-top:20px">Sources</h2>
<table id="sources"><tr><th>source</th><th>connected</th><th>next seq</th><th>committed seq</th><th>ticks</th><th>last tick age</th><th>time zone rule</th><th>terminal reports</th></tr></table>
<h2 style="font-size:16px;margin-top:20px">Postgres loader</h2>
<table id="loader"></table>
<script>
const esc = (t) => String(t).replace(/[&<>"]/g, (c) => '&#' + c.charCodeAt(0) + ';');
const fmt = (n) => typeof n === 'number' ? n.toLocaleString('en-US', {maximumFractionDigits: 1}) : String(n);
async function tick() {
  try {
    const s = await (await fetch('/status')).json();
    document.getElementById('ready').textContent = s.ready ? 'ready' : 'NOT READY (journal unavailable)';
    document.getElementById('ready').className = s.ready ? 'ok' : 'bad';
    document.getElementById('meta').textContent = 'instance ' + s.instanceId + ', up ' + fmt(s.uptimeS) + ' s, RSS ' + fmt(s.rssMb) + ' MB';
    document.getElementById('totals').innerHTML = Object.entries(s.totals)
      .map(([k, v]) => '<tr><td>' + k + '</td><td>' + fmt(v) + '</td></tr>').join('');
    document.getElementById('sources').innerHTML = '<tr><th>source</th><th>connected</th><th>next seq</th><th>committed seq</th><th>ticks</th><th>last tick age</th><th>time zone rule</th><th>terminal reports</th></tr>' +
      s.sources.map((x) => '<tr><td>' + x.source + '</td><td class="' + (x.connected ? 'ok' : 'bad') + '">' + x.connected + '</td><td>' + fmt(x.nextSeq) +
        '</td><td>' + fmt(x.committedSeq) + '</td><td>' + fmt(x.ticks) + '</td><td>' + (x.lastTickAgeS == null ? '–' : fmt(x.lastTickAgeS) + ' s') +
        '</td><td>' + esc(x.timeZoneRule == null ? '–' : x.timeZoneRule + (x.timeZoneRuleFrom === 'terminal' ? ' (from the terminal: no rule configured)' : '')) +
        '</td><td' + (x.clockProblem ? ' class="bad" title="' + esc(x.clockProblem) + '">' + esc((x.reportedOffset ?? '–') + ': REFUSED, see the log') : '>' + esc(x.reportedOffset ?? '–')) + '</td></tr>').join('');
    const head = '<tr><th>partition</th><th>state</th><th>next offset</th><th>records behind</th><th>seconds behind</th><th>problem</th></tr>';
    document.getElementById('loader').innerHTML = !s.loader ? '<tr><td>not running in this process</td></tr>' : head +
      s.loader.map((p) => '<tr><td>' + esc(p.partition) + '</td><td class="' + (p.state === 'blocked' ? 'bad' : 'ok') + '">' + p.state + '</td><td>' + fmt(p.nextOffset) +
        '</td><td>' + fmt(p.lagRecords) + '</td><td>' + fmt(p.lagSeconds) + '</td><td style="text-align:left">' + esc(p.problem ?? '') + '</td></tr>').join('');
  } catch (e) { document.getElementById('ready').textContent = 'unreachable'; }
}
tick(); setInterval(tick, 1000);
</script></body></html>`;
