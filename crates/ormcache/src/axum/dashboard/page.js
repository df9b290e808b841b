// The ormcache dashboard: polls `snapshot` (relative to this page) and draws the
// history of the last KEEP polls as SVG. No external asset, no library.
(() => {
  'use strict';
  const path = location.pathname.endsWith('/') ? location.pathname : location.pathname + '/';
  const SNAPSHOT = path + 'snapshot';
  const every = Math.max(200, Number(new URLSearchParams(location.search).get('every')) || 1000);
  const KEEP = 120;
  const $ = (id) => document.getElementById(id);
  const NS = 'http://www.w3.org/2000/svg';
  const history = [];
  let prev = null;
  let polls = 0;

  const fmt = (v, digits = 1) => (v === null || v === undefined || !isFinite(v)) ? '–'
    : v >= 10000 ? Math.round(v).toLocaleString('en') : v.toFixed(digits);
  const msNum = (us) => (us === null || us === undefined) ? '–'
    : us < 1000 ? (us / 1000).toFixed(2) : fmt(us / 1000);
  const ms = (us) => msNum(us) + ' ms';
  const text = (id, v) => { const el = $(id); if (el && el.textContent !== String(v)) el.textContent = v; };
  const badge = (id, label, cls) => { const el = $(id); el.textContent = label; el.className = 'badge ' + (cls || ''); };

  // Bucket i of a summary counts durations under 2^i µs (and at least 2^(i-1)).
  function delta(now, before) {
    if (!now) return null;
    if (!before) return { count: now.count, sum_us: now.sum_us, buckets: now.buckets.slice() };
    return { count: now.count - before.count, sum_us: now.sum_us - before.sum_us,
      buckets: now.buckets.map((b, i) => b - (before.buckets[i] || 0)) };
  }
  function quantile(d, q) {
    if (!d || d.count <= 0) return null;
    const want = q * d.count;
    let seen = 0;
    for (let i = 0; i < d.buckets.length; i++) {
      const n = d.buckets[i];
      if (n > 0 && seen + n >= want) {
        const lo = i === 0 ? 0 : Math.pow(2, i - 1), hi = Math.pow(2, i);
        return lo + (hi - lo) * ((want - seen) / n);
      }
      seen += n;
    }
    return null;
  }
  const avg = (d) => (d && d.count > 0) ? d.sum_us / d.count : null;
  const ratio = (a, b) => b > 0 ? 100 * a / b : null;

  // Per-level hit rates: L1 of all reads, L2 of the reads that reached it.
  function levels(s, p) {
    const r = s.reads, q = p ? p.reads : { total: 0, l1_hits: 0, l2_hits: 0 };
    const reads = r.total - q.total;
    const l1 = r.l1_hits === null ? null : r.l1_hits - (q.l1_hits || 0);
    const l2 = r.l2_hits === null ? null : r.l2_hits - (q.l2_hits || 0);
    return {
      reads,
      l1: l1 === null ? null : ratio(l1, reads),
      l2: l2 === null ? null : ratio(l2, reads - (l1 || 0)),
      all: ratio((l1 || 0) + (l2 || 0), reads),
    };
  }

  function sample(s) {
    const p = prev;
    const dt = p ? (s.time_ms - p.time_ms) / 1000 : 0;
    const lv = levels(s, p);
    const rt = s.l2 ? delta(s.l2.round_trips, p && p.l2 ? p.l2.round_trips : null) : null;
    const lag = s.coherence ? delta(s.coherence.lag, p && p.coherence ? p.coherence.lag : null) : null;
    const point = {
      t: s.time_ms,
      l1: lv.l1, l2: lv.l2, all: lv.all,
      reads: dt > 0 ? lv.reads / dt : null,
      writes: dt > 0 && p ? (s.writes - p.writes) / dt : null,
      trips: dt > 0 && rt ? rt.count / dt : null,
      rtAvg: avg(rt), rtP50: quantile(rt, 0.5), rtP99: quantile(rt, 0.99),
      lagAvg: avg(lag), lagP99: quantile(lag, 0.99),
      size: s.l1 ? s.l1.size : null,
    };
    if (p) {
      history.push(point);
      if (history.length > KEEP) history.shift();
    }
    return point;
  }

  function chart(id, lines, opts) {
    const svg = $(id);
    const W = 600, H = 170, L = 44, R = 8, T = 8, B = 18;
    let max = opts.max || 0;
    for (const pt of history) for (const l of lines) { const v = pt[l.key]; if (v !== null && isFinite(v)) max = Math.max(max, v); }
    if (!opts.max) max = max > 0 ? niceCeil(max * 1.1) : 1;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const y = (v) => T + (H - T - B) * (1 - Math.min(v, max) / max);
    const x = (i) => L + (W - L - R) * (KEEP - history.length + i) / (KEEP - 1);
    for (let k = 0; k <= 4; k++) {
      const v = max * k / 4, yy = y(v);
      const g = document.createElementNS(NS, 'line');
      g.setAttribute('x1', L); g.setAttribute('x2', W - R); g.setAttribute('y1', yy); g.setAttribute('y2', yy);
      g.setAttribute('class', 'grid'); svg.appendChild(g);
      const t = document.createElementNS(NS, 'text');
      t.setAttribute('x', L - 6); t.setAttribute('y', yy + 4); t.setAttribute('text-anchor', 'end');
      t.textContent = v >= 1000 ? Math.round(v).toLocaleString('en') : +v.toPrecision(3); svg.appendChild(t);
    }
    const span = document.createElementNS(NS, 'text');
    span.setAttribute('x', W - R); span.setAttribute('y', H - 4); span.setAttribute('text-anchor', 'end');
    span.textContent = 'last ' + Math.round(KEEP * every / 1000) + ' s'; svg.appendChild(span);
    let lx = L + 6;
    for (const l of lines) {
      const pts = [];
      history.forEach((pt, i) => { const v = pt[l.key]; if (v !== null && isFinite(v)) pts.push(x(i).toFixed(1) + ',' + y(v).toFixed(1)); });
      const pl = document.createElementNS(NS, 'polyline');
      pl.setAttribute('id', id + '-' + l.key);
      pl.setAttribute('points', pts.join(' '));
      pl.setAttribute('stroke', l.color);
      svg.appendChild(pl);
      const key = document.createElementNS(NS, 'text');
      key.setAttribute('x', lx); key.setAttribute('y', H - 4); key.setAttribute('style', 'fill:' + l.color);
      key.textContent = '■ ' + l.name; svg.appendChild(key);
      lx += 12 + 7 * l.name.length + 14;
    }
  }
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function render(s, pt) {
    polls += 1;
    text('polls', polls);
    text('status', 'updated ' + new Date(s.time_ms).toLocaleTimeString('en-GB'));
    badge('kind', s.kind);
    const c = s.coherence;
    if (c) badge('coherent', c.coherent ? 'coherent' : 'degraded', c.coherent ? 'ok' : 'bad');
    else badge('coherent', 'no invalidation stream');
    if (s.l2) badge('breaker', 'breaker ' + s.l2.breaker.replace('_', '-'),
      s.l2.breaker === 'closed' ? 'ok' : s.l2.breaker === 'open' ? 'bad' : 'warn');
    else badge('breaker', 'no Redis');
    const pct = (v) => v === null || v === undefined ? '–' : v.toFixed(1) + ' %';
    text('l1-hit-rate', pct(pt.l1));
    text('l2-hit-rate', pct(pt.l2));
    text('read-rate', fmt(pt.reads));
    text('write-rate', fmt(pt.writes));
    text('l1-size', s.l1 ? s.l1.size.toLocaleString('en') + (s.l1.max_size ? ' / ' + s.l1.max_size.toLocaleString('en') : '') : '–');
    text('redis-latency', s.l2 ? (pt.rtP50 === null ? '–' : msNum(pt.rtP50) + ' / ' + ms(pt.rtP99)) : 'no Redis');
    text('lag', c ? (pt.lagAvg === null ? '–' : ms(pt.lagAvg)) : '–');
    text('peers-live', c ? c.peers_live + (c.peers_unresponsive ? ' (' + c.peers_unresponsive + ' unresponsive)' : '') : '–');
    text('unconfirmed', c ? c.unconfirmed : '–');
    text('backlog', c ? c.backlog : '–');
    text('reads-total', s.reads.total.toLocaleString('en'));
    text('writes-total', s.writes.toLocaleString('en'));
    text('round-trips', s.l2 ? s.l2.round_trips.count.toLocaleString('en') : '–');
    text('flushes', c ? c.flushes : '–');
    text('gaps', c ? c.gaps : '–');
    text('sent', c ? c.invalidations_sent : '–');
    text('received', c ? c.invalidations_received : '–');
    text('instance', c ? '(this instance: ' + c.instance + ')' : '');

    chart('chart-hits', [{ key: 'l1', name: 'L1', color: 'var(--l1)' }, { key: 'l2', name: 'L2', color: 'var(--l2)' },
      { key: 'all', name: 'combined', color: 'var(--all)' }], { max: 100 });
    chart('chart-ops', [{ key: 'reads', name: 'reads', color: 'var(--l1)' }, { key: 'writes', name: 'writes', color: 'var(--l2)' },
      { key: 'trips', name: 'Redis round trips', color: 'var(--all)' }], {});
    const toMs = (k) => history.forEach((h) => { h[k + 'Ms'] = h[k] === null ? null : h[k] / 1000; });
    ['rtAvg', 'rtP99', 'lagAvg', 'lagP99'].forEach(toMs);
    chart('chart-redis', [{ key: 'rtAvgMs', name: 'mean', color: 'var(--l1)' }, { key: 'rtP99Ms', name: 'p99', color: 'var(--l2)' }], {});
    chart('chart-lag', [{ key: 'lagAvgMs', name: 'mean', color: 'var(--l1)' }, { key: 'lagP99Ms', name: 'p99', color: 'var(--l2)' }], {});
    chart('chart-size', [{ key: 'size', name: 'entries', color: 'var(--l1)' }], {});

    const tbody = $('peers');
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    for (const peer of (c ? c.peers : [])) {
      const tr = document.createElement('tr');
      const state = peer.unresponsive ? 'unresponsive' : peer.live ? 'live' : 'silent';
      for (const v of [peer.id, (peer.last_heard_ms / 1000).toFixed(1) + ' s ago', peer.acked, state]) {
        const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
      }
      tr.className = 'peer-' + state;
      tbody.appendChild(tr);
    }
    if (!c || c.peers.length === 0) {
      const tr = document.createElement('tr'); const td = document.createElement('td');
      td.colSpan = 4; td.className = 'muted'; td.textContent = c ? 'alone on the channel' : 'no invalidation stream (not a hybrid cache)';
      tr.appendChild(td); tbody.appendChild(tr);
    }
    text('events-total', s.events_total);
    const ul = $('events');
    while (ul.firstChild) ul.removeChild(ul.firstChild);
    for (const e of s.events.slice().reverse()) {
      const li = document.createElement('li');
      li.className = 'ev-' + e.kind;
      li.textContent = new Date(e.at_ms).toLocaleTimeString('en-GB') + '  ' + e.kind.replace('_', ' ');
      ul.appendChild(li);
    }
  }

  async function tick() {
    try {
      const r = await fetch(SNAPSHOT, { cache: 'no-store' });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const s = await r.json();
      const pt = sample(s);
      render(s, pt);
      prev = s;
    } catch (e) {
      text('status', 'cannot read ' + SNAPSHOT + ': ' + e.message);
    } finally {
      setTimeout(tick, every);
    }
  }
  tick();
})();
