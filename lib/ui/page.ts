/**
 * The web view's one page: HTML, CSS and the script as strings, served as three
 * files (no inline script or style, so the Content-Security-Policy can forbid
 * both). No build step and no dependency.
 *
 * Every value from etcd reaches the document through `textContent` (or a
 * `data-` attribute), never through markup: metadata holding `<script>` or
 * `<img onerror>` shows as those characters. The policy also enforces Trusted
 * Types, so even a future `innerHTML = string` would throw instead of parsing.
 *
 * The script keeps a copy of the state (a snapshot, then deltas from
 * `/events`), renders at most MAX_ROWS endpoint rows (a filter narrows a large
 * service) and refreshes ages and time left once a second. It sets
 * `data-ready` on <html> and the performance mark `view-ready` once the first
 * snapshot is on screen.
 */

export const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>etcd service registry</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>etcd service registry</h1>
  <div id="banner" class="banner wait" role="status" aria-live="polite">connecting…</div>
</header>
<main>
  <section id="services-panel" aria-labelledby="services-title">
    <h2 id="services-title">Services</h2>
    <table id="services">
      <colgroup><col><col class="w-count"><col class="w-change"></colgroup>
      <thead><tr><th>Service</th><th class="num">Endpoints</th><th class="num">Last change</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="services-empty" class="note" hidden>No services under the prefix.</p>
  </section>
  <section id="endpoints-panel" aria-labelledby="endpoints-title">
    <div class="bar">
      <h2 id="endpoints-title">Endpoints</h2>
      <input id="filter" type="search" placeholder="filter by address or metadata" aria-label="filter endpoints" autocomplete="off" spellcheck="false">
    </div>
    <table id="endpoints">
      <colgroup><col class="w-address"><col><col class="w-lease"><col class="w-ttl"><col class="w-age"></colgroup>
      <thead><tr><th>Address</th><th>Metadata</th><th>Lease</th><th class="num">Time left</th><th class="num">Age</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="endpoints-note" class="note"></p>
  </section>
  <section id="feed-panel" aria-labelledby="feed-title">
    <h2 id="feed-title">Recent registrations and deregistrations</h2>
    <ol id="feed"></ol>
    <p id="feed-empty" class="note">None since the view started.</p>
  </section>
</main>
<footer id="footer"></footer>
</body>
</html>
`;

export const CSS = `:root { color-scheme: light; --fg: #1d2330; --muted: #5d6677; --line: #dde1e8; --ok: #17663a; --okbg: #e3f4e9; --bad: #8f1d1d; --badbg: #fbe4e4; --sel: #eef3ff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: #f7f8fa; }
header { display: flex; align-items: center; gap: 16px; padding: 10px 16px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 17px; margin: 0; white-space: nowrap; }
h2 { font-size: 14px; margin: 0 0 8px; }
.banner { flex: 1; padding: 6px 10px; border-radius: 6px; font-weight: 600; }
.banner.ok { color: var(--ok); background: var(--okbg); }
.banner.bad { color: var(--bad); background: var(--badbg); }
.banner.wait { color: var(--muted); background: #eceef2; }
main { display: grid; grid-template-columns: minmax(370px, 1fr) 2.6fr; grid-template-areas: "services endpoints" "feed feed"; gap: 12px; padding: 12px 16px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; min-width: 0; }
#services-panel { grid-area: services; }
#endpoints-panel { grid-area: endpoints; }
#feed-panel { grid-area: feed; }
.bar { display: flex; align-items: baseline; gap: 12px; }
.bar h2 { flex: 1; overflow-wrap: anywhere; }
#filter { width: 260px; padding: 4px 8px; border: 1px solid var(--line); border-radius: 4px; font: inherit; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
.w-count { width: 100px; } .w-change { width: 118px; }
.w-address { width: 18%; } .w-lease { width: 140px; } .w-ttl { width: 84px; } .w-age { width: 70px; }
th { text-align: left; font-weight: 600; color: var(--muted); border-bottom: 1px solid var(--line); padding: 4px 6px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
td { border-bottom: 1px solid #eef0f3; padding: 4px 6px; vertical-align: top; }
.num { text-align: right; white-space: nowrap; }
code { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; overflow-wrap: anywhere; }
td.meta code { color: #3c4a63; }
#services button { all: unset; cursor: pointer; color: #1a4fb5; overflow-wrap: anywhere; }
#services button:focus-visible { outline: 2px solid #1a4fb5; }
#services tr[aria-selected="true"] { background: var(--sel); }
#services tr[aria-selected="true"] button { font-weight: 600; }
.note { color: var(--muted); margin: 8px 0 0; }
.note:empty { display: none; }
#feed { list-style: none; margin: 0; padding: 0; max-height: 240px; overflow: auto; }
#feed li { padding: 2px 0; border-bottom: 1px solid #f0f1f4; display: flex; gap: 10px; }
#feed .time { color: var(--muted); font-variant-numeric: tabular-nums; }
#feed .registered .change { color: var(--ok); }
#feed .deregistered .change { color: var(--bad); }
#feed .change { font-weight: 600; min-width: 92px; }
footer { color: var(--muted); padding: 0 16px 16px; font-size: 12.5px; overflow-wrap: anywhere; }
`;

// The script is plain ES2020 and deliberately contains no backtick and no dollar-brace.
export const SCRIPT = `'use strict';
(function () {
  var MAX_ROWS = 500;
  var FEED_SHOWN = 100;
  var rows = new Map();
  var byService = new Map();
  var services = new Map();
  var leases = new Map();
  var feed = [];
  var status = null;
  var info = { prefix: '', etcd: '', startedAt: 0 };
  var skew = 0;
  var streamOk = false;
  var ready = false;
  var dirty = { services: false, endpoints: false, feed: false, banner: false };
  var serviceTimes = [];
  var endpointTimes = [];
  var selected = fromHash();
  var filterText = '';
  var scheduled = false;

  function fromHash() {
    try { return decodeURIComponent(location.hash.slice(1)) || null; } catch (e) { return null; }
  }
  function byId(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function code(text) { var c = el('code', text); return c; }
  function serverNow() { return Date.now() - skew; }
  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    var h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }
  function clock(t) { return new Date(t + skew).toLocaleTimeString([], { hour12: false }); }
  function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  function addRow(r) {
    var old = rows.get(r.key);
    if (old) dropFromService(old);
    rows.set(r.key, r);
    var m = byService.get(r.service);
    if (!m) { m = new Map(); byService.set(r.service, m); }
    m.set(r.key, r);
    if (r.service === selected) dirty.endpoints = true;
  }
  function dropFromService(r) {
    var m = byService.get(r.service);
    if (m) { m.delete(r.key); if (m.size === 0) byService.delete(r.service); }
    if (r.service === selected) dirty.endpoints = true;
  }
  function removeRow(key) {
    var r = rows.get(key);
    if (!r) return;
    rows.delete(key);
    dropFromService(r);
  }
  function setLeases(map) { for (var id in map) leases.set(id, map[id]); }
  function allDirty() { dirty.services = dirty.endpoints = dirty.feed = dirty.banner = true; }

  function onSnapshot(s) {
    skew = Date.now() - s.now;
    info = { prefix: s.prefix, etcd: s.etcd, startedAt: s.startedAt };
    rows.clear(); byService.clear(); services.clear(); leases.clear();
    s.endpoints.forEach(addRow);
    s.services.forEach(function (x) { services.set(x.name, x); });
    feed = s.feed.slice();
    setLeases(s.leases);
    status = s.status;
    streamOk = true;
    if (selected === null) selected = firstService();
    allDirty();
    render();
    if (!ready) {
      ready = true;
      document.documentElement.dataset.ready = 'true';
      if (window.performance && performance.mark) performance.mark('view-ready');
    }
  }
  function onDelta(d) {
    d.removals.forEach(removeRow);
    d.upserts.forEach(addRow);
    d.services.forEach(function (x) {
      if (x.count > 0) services.set(x.name, x); else services.delete(x.name);
    });
    if (d.feed.length > 0) {
      feed = feed.concat(d.feed);
      if (feed.length > 200) feed = feed.slice(feed.length - 200);
      dirty.feed = true;
    }
    if (selected === null) { selected = firstService(); dirty.endpoints = true; }
    dirty.services = dirty.banner = true;
    schedule();
  }
  function firstService() {
    var names = Array.from(services.keys()).sort(cmp);
    return names.length > 0 ? names[0] : null;
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    var done = false;
    var run = function () { if (done) return; done = true; scheduled = false; render(); };
    requestAnimationFrame(run);
    setTimeout(run, 250);
  }

  function render() {
    if (dirty.banner) { dirty.banner = false; renderBanner(); }
    if (dirty.services) { dirty.services = false; renderServices(); }
    if (dirty.endpoints) { dirty.endpoints = false; renderEndpoints(); }
    if (dirty.feed) { dirty.feed = false; renderFeed(); }
  }

  function renderBanner() {
    var banner = byId('banner');
    var text;
    var cls;
    if (!streamOk) {
      cls = 'wait';
      text = ready ? 'connection to the view lost: reconnecting…' : 'connecting…';
    } else if (status.reachable) {
      cls = 'ok';
      text = 'etcd reachable · revision ' + status.revision + ' · ' + rows.size + ' endpoint' + (rows.size === 1 ? '' : 's') + ' in ' + services.size + ' service' + (services.size === 1 ? '' : 's');
    } else {
      cls = 'bad';
      text = 'etcd unreachable since ' + clock(status.since) + ': ' + status.error + ' · showing revision ' + status.revision;
    }
    if (streamOk && status.skipped > 0) text += ' · ' + status.skipped + ' record' + (status.skipped === 1 ? '' : 's') + ' skipped (not valid endpoints)';
    banner.className = 'banner ' + cls;
    banner.textContent = text;
    banner.dataset.revision = status ? String(status.revision) : '';
    byId('footer').textContent = 'prefix ' + JSON.stringify(info.prefix) + ' · etcd ' + info.etcd + ' · view started ' + (info.startedAt ? clock(info.startedAt) : '…') + ' · read-only';
  }

  function renderServices() {
    var names = Array.from(services.keys()).sort(cmp);
    var body = document.createDocumentFragment();
    serviceTimes = [];
    names.forEach(function (name) {
      var s = services.get(name);
      var tr = el('tr');
      tr.dataset.service = name;
      tr.setAttribute('aria-selected', name === selected ? 'true' : 'false');
      var td = el('td');
      var button = el('button', name);
      button.type = 'button';
      td.appendChild(button);
      tr.appendChild(td);
      tr.appendChild(el('td', s.count, 'num'));
      var last = el('td', '', 'num');
      serviceTimes.push([last, s]);
      tr.appendChild(last);
      body.appendChild(tr);
    });
    byId('services').tBodies[0].replaceChildren(body);
    byId('services-empty').hidden = names.length > 0;
    refreshServiceTimes();
  }

  function renderEndpoints() {
    var title = byId('endpoints-title');
    var note = byId('endpoints-note');
    var tbody = byId('endpoints').tBodies[0];
    endpointTimes = [];
    if (selected === null) {
      title.textContent = 'Endpoints';
      note.textContent = 'Pick a service.';
      tbody.replaceChildren();
      return;
    }
    var m = byService.get(selected);
    var all = m ? Array.from(m.values()) : [];
    title.textContent = 'Endpoints of ' + selected + ' (' + all.length + ')';
    var shown = all;
    if (filterText !== '') {
      shown = all.filter(function (r) {
        return r.address.toLowerCase().indexOf(filterText) >= 0 || r.metadata.toLowerCase().indexOf(filterText) >= 0 || r.lease.indexOf(filterText) >= 0;
      });
    }
    shown.sort(function (a, b) { return cmp(a.address, b.address); });
    var body = document.createDocumentFragment();
    var limit = Math.min(shown.length, MAX_ROWS);
    for (var i = 0; i < limit; i++) {
      var r = shown[i];
      var tr = el('tr');
      tr.dataset.key = r.key;
      var a = el('td'); a.appendChild(code(r.address)); tr.appendChild(a);
      var md = el('td', null, 'meta'); md.appendChild(code(r.metadata)); tr.appendChild(md);
      var lease = el('td'); lease.appendChild(code(r.lease === '' ? '-' : r.lease)); tr.appendChild(lease);
      var left = el('td', '', 'num ttl');
      var age = el('td', '', 'num age');
      tr.appendChild(left); tr.appendChild(age);
      endpointTimes.push([left, age, r]);
      body.appendChild(tr);
    }
    tbody.replaceChildren(body);
    if (all.length === 0) note.textContent = 'No endpoints: the service has none registered now.';
    else if (shown.length === 0) note.textContent = 'No endpoint matches the filter.';
    else if (shown.length > limit) note.textContent = 'Showing ' + limit + ' of ' + shown.length + ': narrow them with the filter.';
    else note.textContent = '';
    refreshEndpointTimes();
  }

  function renderFeed() {
    var list = byId('feed');
    var body = document.createDocumentFragment();
    for (var i = feed.length - 1; i >= 0 && i >= feed.length - FEED_SHOWN; i--) {
      var f = feed[i];
      var li = el('li', null, f.change);
      li.appendChild(el('span', clock(f.time), 'time'));
      li.appendChild(el('span', f.change + (f.resync ? ' (found on re-read)' : ''), 'change'));
      li.appendChild(el('span', f.service, 'service'));
      li.appendChild(code(f.address));
      body.appendChild(li);
    }
    list.replaceChildren(body);
    byId('feed-empty').hidden = feed.length > 0;
  }

  function timeLeft(r) {
    if (r.lease === '') return '-';
    var l = leases.get(r.lease);
    if (!l) return '…';
    if (l.ttl === null) return '?';
    if (l.ttl < 0) return 'expired';
    var left = l.ttl - (serverNow() - l.at) / 1000;
    return left <= 0 ? '0s' : Math.ceil(left) + 's';
  }
  function age(r) { return (r.atStart ? '≥ ' : '') + duration(serverNow() - r.since); }
  function refreshServiceTimes() {
    serviceTimes.forEach(function (x) {
      var s = x[1];
      x[0].textContent = s.lastChange === null ? '≥ ' + duration(serverNow() - info.startedAt) + ' ago' : duration(serverNow() - s.lastChange) + ' ago';
    });
  }
  function refreshEndpointTimes() {
    endpointTimes.forEach(function (x) {
      x[0].textContent = timeLeft(x[2]);
      x[1].textContent = age(x[2]);
    });
  }

  function select(name) {
    if (name === selected) return;
    selected = name;
    dirty.services = dirty.endpoints = true;
    render();
  }

  document.addEventListener('DOMContentLoaded', function () {
    byId('services').addEventListener('click', function (e) {
      var tr = e.target instanceof Element ? e.target.closest('tr[data-service]') : null;
      if (!tr) return;
      var name = tr.dataset.service;
      history.replaceState(null, '', '#' + encodeURIComponent(name));
      select(name);
    });
    byId('filter').addEventListener('input', function (e) {
      filterText = e.target.value.trim().toLowerCase();
      dirty.endpoints = true;
      schedule();
    });
    window.addEventListener('hashchange', function () { select(fromHash()); });
    setInterval(function () { refreshServiceTimes(); refreshEndpointTimes(); }, 1000);

    var events = new EventSource('/events');
    var on = function (name, fn) {
      events.addEventListener(name, function (e) { fn(JSON.parse(e.data)); });
    };
    on('snapshot', onSnapshot);
    on('delta', onDelta);
    on('status', function (s) { status = s; dirty.banner = true; schedule(); });
    on('leases', function (l) { setLeases(l); refreshEndpointTimes(); });
    events.addEventListener('error', function () {
      if (!streamOk) return;
      streamOk = false;
      dirty.banner = true;
      schedule();
    });
  });
})();
`;
