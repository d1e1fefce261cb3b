// Lasso's operator dashboard: polls /dashboard/api/status, /dashboard/api/metrics/:chain and /dashboard/api/cluster,
// follows /dashboard/api/events/:profile (Server-Sent Events, authenticated by the session cookie) and sends test
// requests over HTTP and WebSocket. On /dashboard/:profile every request names that profile and nothing else is
// fetched. No dependencies, no build step.

import { lineChart, COLORS } from '/dashboard/assets/chart.js';

const PROFILE = (() => {
  const m = location.pathname.match(/^\/dashboard\/([^/]+)\/?$/);
  return m ? decodeURIComponent(m[1]) : null;
})();
const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const FEED_MAX = 300;
const MAX_STREAMS = 3;
// Provider states shown as down.
const DOWN = new Set(['circuit_open', 'failing', 'disabled']);

const $ = (id) => document.getElementById(id);
const state = {
  status: null,
  history: new Map(), // `${profile}/${chain}` -> [{t, requests, successes, providers: Map(id -> {requests, p50})}]
  metrics: new Map(), // `${profile}/${chain}` -> /api/metrics answer
  events: [],
  streams: new Map(), // profile -> EventSource
  lbChain: null,
};

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function table(headers, rows) {
  return h('table', {}, h('thead', {}, h('tr', {}, ...headers.map((x) => h('th', { text: x })))),
    h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => (c instanceof Node ? h('td', {}, c) : h('td', { text: c ?? '-' })))))));
}

const ms = (us) => (us == null ? '-' : `${(us / 1000).toFixed(us < 10000 ? 2 : 0)} ms`);
const pct = (x) => (x == null || Number.isNaN(x) ? '-' : `${(x * 100).toFixed(1)}%`);
const withProfile = (url, profile) => (profile ? `${url}${url.includes('?') ? '&' : '?'}profile=${encodeURIComponent(profile)}` : url);

async function getJson(url) {
  const r = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 401) {
    location.reload();
    throw new Error('signed out');
  }
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function key(c) {
  return `${c.profile}/${c.name}`;
}

function remember(status) {
  const now = Date.now();
  for (const c of status.chains) {
    const list = state.history.get(key(c)) || [];
    const providers = new Map(c.providers.map((p) => [p.id, { requests: p.requests, p50: p.routing.p50_us }]));
    list.push({
      t: now,
      requests: c.providers.reduce((a, p) => a + p.requests, 0),
      successes: c.providers.reduce((a, p) => a + p.successes, 0),
      providers,
    });
    while (list.length && list[0].t < now - HISTORY_MS) list.shift();
    state.history.set(key(c), list);
  }
}

// Requests per second over the last ~30 s of the chain's history, and each provider's share of them.
function rates(c) {
  const list = state.history.get(key(c)) || [];
  if (list.length < 2) return { rps: 0, share: new Map() };
  const last = list[list.length - 1];
  const first = list.find((e) => e.t >= last.t - 30000) || list[0];
  const dt = Math.max(1, last.t - first.t) / 1000;
  const total = last.requests - first.requests;
  const share = new Map();
  for (const [id, p] of last.providers) {
    const before = first.providers.get(id)?.requests ?? 0;
    share.set(id, total > 0 ? (p.requests - before) / total : 0);
  }
  return { rps: first === last ? 0 : total / dt, share };
}

function renderOverview(status) {
  const cards = status.chains.map((c) => {
    const { rps, share } = rates(c);
    const sampled = c.providers.filter((p) => p.routing.samples > 0);
    const p50 = sampled.length ? Math.min(...sampled.map((p) => p.routing.p50_us)) : null;
    const p95 = sampled.length ? Math.min(...sampled.map((p) => p.routing.p90_us)) : null;
    const req = c.providers.reduce((a, p) => a + p.requests, 0);
    const ok = c.providers.reduce((a, p) => a + p.successes, 0);
    const recent = state.events.filter((e) => e.chain === c.name && e.profile === c.profile).slice(0, 3);
    const rows = c.providers.map((p) => [
      p.id,
      h('span', { class: `state state-${p.state}`, text: DOWN.has(p.state) ? `down (${p.state})` : p.state }),
      p.routing.breaker,
      c.head != null && p.routing.head != null ? String(Math.max(0, c.head - p.routing.head)) : (p.routing.lag ?? '-').toString(),
      ms(p.routing.p50_us),
      h('span', {}, h('span', { class: 'bar', 'data-share': (share.get(p.id) || 0).toFixed(2) }), ` ${pct(share.get(p.id) || 0)}`),
      String(p.requests),
    ]);
    const card = h('div', { class: 'card chain', 'data-chain': c.name, 'data-profile': c.profile },
      h('h3', { text: `${c.name} (${c.chain_id})${PROFILE ? '' : ` \u00b7 ${c.profile}`}` }),
      h('div', { class: 'kpis' },
        h('span', { class: 'kpi' }, h('b', { class: 'rps', text: rps.toFixed(1) }), 'req/s'),
        h('span', { class: 'kpi' }, h('b', { class: 'requests', text: String(req) }), 'requests'),
        h('span', { class: 'kpi' }, h('b', { text: req ? pct(ok / req) : '-' }), 'success'),
        h('span', { class: 'kpi' }, h('b', { text: ms(p50) }), 'best p50'),
        h('span', { class: 'kpi' }, h('b', { text: ms(p95) }), 'best p90'),
        h('span', { class: 'kpi' }, h('b', { text: c.head != null ? String(c.head) : '-' }), 'head')),
      table(['provider', 'state', 'breaker', 'lag', 'p50', 'share', 'calls'], rows),
      h('div', { class: 'muted', text: recent.length ? `last: ${recent.map((e) => `${e.method}\u2192${e.provider ?? '-'}`).join(', ')}` : 'no routing decisions seen yet' }));
    return card;
  });
  $('chains').replaceChildren(...cards);
  for (const bar of document.querySelectorAll('.bar')) bar.style.width = `${Number(bar.dataset.share) * 4}rem`;
}

function chainOptions(select, chains, keep) {
  const current = keep ?? select.value;
  const first = select.querySelector('option[value=""]');
  const opts = chains.map((c) => h('option', { value: key(c), text: PROFILE ? c.name : `${c.profile}/${c.name}` }));
  select.replaceChildren(...(first ? [first] : []), ...opts);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

async function renderLeaderboard(status) {
  const select = $('lb-chain');
  chainOptions(select, status.chains, state.lbChain);
  state.lbChain = select.value || (status.chains[0] && key(status.chains[0]));
  const chain = status.chains.find((c) => key(c) === state.lbChain);
  if (!chain) return;
  let m;
  try {
    m = await getJson(withProfile(`/dashboard/api/metrics/${encodeURIComponent(chain.name)}`, chain.profile));
  } catch (e) {
    return;
  }
  state.metrics.set(key(chain), m);
  const { share } = rates(chain);
  const ranked = [...m.providers].sort((a, b) => (a.routing.p50_us || 1e12) - (b.routing.p50_us || 1e12));
  $('lb-table').replaceChildren(table(['#', 'provider', 'p50', 'p90', 'p99', 'p99/p50', 'success', 'calls', 'share'],
    ranked.map((p, i) => [String(i + 1), p.id, ms(p.routing.p50_us), ms(p.routing.p90_us), ms(p.routing.p99_us),
      p.routing.p50_us ? (p.routing.p99_us / p.routing.p50_us).toFixed(1) : '-', pct(p.routing.samples ? p.routing.success_rate : null),
      String(p.requests), pct(share.get(p.id) || 0)])));
  const rows = [];
  for (const p of m.providers) for (const x of p.methods) rows.push([p.id, x.method, String(x.samples), pct(x.success_rate), ms(x.p50_us), ms(x.p90_us), ms(x.p99_us)]);
  $('lb-methods').replaceChildren(table(['provider', 'method', 'samples', 'success', 'p50', 'p90', 'p99'], rows));
  const hist = state.history.get(key(chain)) || [];
  const series = chain.providers.map((p, i) => ({
    name: p.id,
    color: COLORS[i % COLORS.length],
    points: hist.filter((e) => e.providers.get(p.id)?.p50).map((e) => [e.t, e.providers.get(p.id).p50 / 1000]),
  }));
  lineChart($('lb-chart'), series, (v) => `${v.toFixed(v < 10 ? 1 : 0)} ms`);
}

function renderSubscriptions(status) {
  const ws = status.status.websocket || {};
  const rows = Object.entries(ws).map(([k, v]) => [k.replaceAll('_', ' '), typeof v === 'object' ? JSON.stringify(v) : String(v)]);
  $('subs').replaceChildren(table(['', 'value'], rows));
}

async function renderCluster() {
  let c;
  try {
    c = await getJson(withProfile('/dashboard/api/cluster', PROFILE));
  } catch (e) {
    $('cluster-view').replaceChildren(h('p', { class: 'muted', text: String(e.message) }));
    return;
  }
  const stale = (c.age_ms ?? 0) > 30000;
  const head = h('p', {},
    h('b', { class: `cluster-${c.status}`, text: c.status }),
    ` \u00b7 coverage ${c.coverage.responding}/${c.coverage.total}`,
    c.enabled ? ` \u00b7 peer figures ${Math.round((c.age_ms ?? 0) / 1000)} s old` : ' \u00b7 clustering off',
    stale ? h('span', { class: 'stale', text: ' (stale)' }) : '');
  const nodes = c.nodes.map((n) => [n.node_id + (n.self ? ' (this node)' : ''), n.region ?? '-', n.version, `${n.uptime_s} s`, String(n.metrics.requests), String(n.metrics.errors), 'answering']);
  for (const m of c.unreachable) nodes.push([m.node_id ?? m.address, '-', '-', '-', '-', '-', h('span', { class: 'stale', text: `stale: ${m.error}` })]);
  $('cluster-view').replaceChildren(head, table(['node', 'region', 'version', 'uptime', 'requests', 'errors', ''], nodes));
}

function outcome(e) {
  if (!e.ok) return 'error';
  if (e.retries > 0) return 'failover';
  return 'ok';
}

function renderFeed() {
  const chain = $('f-chain').value;
  const method = $('f-method').value.trim();
  const provider = $('f-provider').value;
  const out = $('f-outcome').value;
  const rows = state.events.filter((e) => (!chain || `${e.profile}/${e.chain}` === chain)
    && (!method || e.method.includes(method)) && (!provider || e.provider === provider)
    && (!out || outcome(e) === out)).slice(0, 100);
  const tbody = $('feed').tBodies[0];
  tbody.replaceChildren(...rows.map((e) => {
    const o = outcome(e);
    return h('tr', { class: `event ${o}` },
      h('td', { text: new Date(e.ts_ms).toLocaleTimeString() }),
      h('td', { class: 'source', text: `${e.source_node}${e.source_region ? `@${e.source_region}` : ''}` }),
      h('td', { text: e.profile }), h('td', { class: 'key', text: e.key_id ?? '-' }),
      h('td', { text: e.chain }), h('td', { text: e.method }),
      h('td', { class: 'provider', text: e.provider ?? '-' }), h('td', { text: e.strategy }),
      h('td', { text: ms(e.latency_us) }), h('td', { text: String(e.retries) + (e.hedged ? ' +hedge' : '') }),
      h('td', { class: o === 'error' ? 'bad' : o === 'failover' ? 'warn' : 'ok', text: `${o} ${e.status}` }));
  }));
}

function follow(profiles) {
  for (const p of profiles) {
    if (state.streams.has(p)) continue;
    const es = new EventSource(`/dashboard/api/events/${encodeURIComponent(p)}`);
    es.onmessage = (m) => {
      try {
        state.events.unshift(JSON.parse(m.data));
      } catch (e) {
        return;
      }
      if (state.events.length > FEED_MAX) state.events.length = FEED_MAX;
      scheduleFeed();
    };
    es.onopen = () => { $('feed-state').textContent = 'live'; };
    es.onerror = () => { $('feed-state').textContent = 'reconnecting\u2026'; };
    state.streams.set(p, es);
  }
}

let feedPending = false;
function scheduleFeed() {
  if (feedPending) return;
  feedPending = true;
  setTimeout(() => { feedPending = false; renderFeed(); }, 250);
}

function refreshFilters(status) {
  chainOptions($('f-chain'), status.chains);
  const sel = $('f-provider');
  const current = sel.value;
  const ids = [...new Set(status.chains.flatMap((c) => c.providers.map((p) => p.id)))];
  sel.replaceChildren(h('option', { value: '', text: 'all' }), ...ids.map((id) => h('option', { value: id, text: id })));
  if (ids.includes(current)) sel.value = current;
  const route = $('t-route');
  if (!route.value && status.chains[0]) {
    const c = status.chains[0];
    route.value = c.profile === 'default' ? `/rpc/${c.name}` : `/rpc/profile/${c.profile}/${c.name}`;
  }
}

async function tick() {
  try {
    const s = await getJson(withProfile('/dashboard/api/status', PROFILE));
    state.status = s;
    $('scope').textContent = PROFILE ? `profile ${PROFILE}` : `all profiles (${s.profiles.join(', ')})`;
    $('node').textContent = `node ${s.node_id}${s.region ? ` \u00b7 ${s.region}` : ''} \u00b7 v${s.status.version} \u00b7 up ${s.status.uptime_s} s`;
    remember(s.status);
    renderOverview(s.status);
    refreshFilters(s.status);
    renderSubscriptions(s);
    // A browser holds 6 connections per host over HTTP/1.1: follow a few profiles here, each on its own page.
    follow(s.profiles.slice(0, MAX_STREAMS));
    if (s.profiles.length > MAX_STREAMS) {
      $('feed-state').textContent = `following ${MAX_STREAMS} of ${s.profiles.length} profiles: open /dashboard/<profile> for the others`;
    }
    await renderLeaderboard(s.status);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('updated').textContent = `update failed: ${e.message}`;
  }
}

async function sendTest(ev) {
  ev.preventDefault();
  const transport = $('t-transport').value;
  const route = $('t-route').value.trim();
  const body = $('t-body').value;
  const answer = $('t-answer');
  const meta = $('t-meta');
  answer.textContent = '\u2026';
  meta.textContent = '';
  const started = performance.now();
  if (transport === 'http') {
    try {
      const r = await fetch(`${route}${route.includes('?') ? '&' : '?'}include_meta=body`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
      });
      const text = await r.text();
      let shown = text;
      try {
        const json = JSON.parse(text);
        const one = Array.isArray(json) ? json[0] : json;
        if (one && one.lasso_meta) meta.textContent = `routing: ${JSON.stringify(one.lasso_meta, null, 2)}`;
        shown = JSON.stringify(json, null, 2);
      } catch (e) { /* not JSON: shown as is */ }
      answer.textContent = `HTTP ${r.status} in ${(performance.now() - started).toFixed(1)} ms\n${shown}`;
    } catch (e) {
      answer.textContent = `failed: ${e.message}`;
    }
    return;
  }
  const wsRoute = route.startsWith('/ws/') ? route : `/ws${route}`;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${wsRoute}${wsRoute.includes('?') ? '&' : '?'}include_meta=body`;
  const ws = new WebSocket(url);
  const timer = setTimeout(() => { answer.textContent = 'no answer within 10 s'; ws.close(); }, 10000);
  ws.onopen = () => ws.send(body);
  ws.onmessage = (m) => {
    clearTimeout(timer);
    let shown = m.data;
    try {
      const json = JSON.parse(m.data);
      if (json.lasso_meta) meta.textContent = `routing: ${JSON.stringify(json.lasso_meta, null, 2)}`;
      shown = JSON.stringify(json, null, 2);
    } catch (e) { /* shown as is */ }
    answer.textContent = `WebSocket answer in ${(performance.now() - started).toFixed(1)} ms\n${shown}`;
    ws.close();
  };
  ws.onerror = () => { clearTimeout(timer); answer.textContent = 'WebSocket failed'; };
}

for (const id of ['f-chain', 'f-method', 'f-provider', 'f-outcome']) $(id).addEventListener('input', renderFeed);
$('lb-chain').addEventListener('change', () => { state.lbChain = $('lb-chain').value; tick(); });
$('tester-form').addEventListener('submit', sendTest);
tick();
renderCluster();
setInterval(tick, POLL_MS);
setInterval(renderCluster, 5000);
