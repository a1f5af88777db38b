// The admin page's script: fetches the JSON API (docs/api.md) and draws the cards, the
// retention heatmap, the running totals and the sources (the 90-day trend is an SVG the
// server draws); refreshes
// every `refresh_seconds` without reloading the page, pausing while the tab is hidden.
// No framework and no inline script (the Content-Security-Policy forbids it): the page
// hands its settings over in <script type="application/json" id="dashboard-settings">.
// Text from the server is only ever set with textContent, never parsed as HTML.
'use strict';

(function () {
  const settings = JSON.parse(document.getElementById('dashboard-settings').textContent);
  const refreshMs = Math.max(1000, settings.refresh_seconds * 1000);
  const iconSprite = document.body.dataset.icons;
  const SVG = 'http://www.w3.org/2000/svg';
  // A refresh older than this many periods makes the numbers "stale".
  const STALE_AFTER_PERIODS = 3;

  const state = {
    app: new URLSearchParams(location.search).get('app'),
    period: 'day',
    timer: null,
    lastAttempt: 0,
    lastGood: 0,
    refreshes: 0,
    inFlight: null,
    again: false,
    summary: null,
    retention: null,
    serverDate: 0,
    serverDateAt: 0,
  };

  const $ = (id) => document.getElementById(id);
  const number = new Intl.NumberFormat('en-US');

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function icon(id, cls) {
    const svg = svgEl('svg', { class: 'bi ' + (cls || ''), 'aria-hidden': 'true' });
    svg.append(svgEl('use', { href: iconSprite + '#' + id }));
    return svg;
  }

  function percent(ratio, digits) {
    return (ratio * 100).toFixed(digits === undefined ? 1 : digits) + ' %';
  }

  // ---- fetching -------------------------------------------------------------------

  class HttpError extends Error {
    constructor(path, status, message) {
      super(message);
      this.path = path;
      this.status = status;
    }
  }

  async function getJSON(path) {
    const response = await fetch(path, {
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
    });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        message = (await response.json()).error || message;
      } catch (_) { /* not JSON: keep the status */ }
      throw new HttpError(path, response.status, message);
    }
    // The server's clock, so that a browser whose clock is off raises no false alarm.
    const date = Date.parse(response.headers.get('Date') || '');
    if (!Number.isNaN(date)) {
      state.serverDate = date;
      state.serverDateAt = Date.now();
    }
    return response.json();
  }

  async function load() {
    const apps = await getJSON('/api/v1/apps');
    const names = apps.apps.map((a) => a.app);
    renderAppSelect(names);
    if (names.length === 0) return { apps, empty: true };
    if (!names.includes(state.app)) state.app = names[0];
    const q = 'app=' + encodeURIComponent(state.app);
    const [summary, sources, retention, lifecycle] = await Promise.all([
      getJSON(`/api/v1/summary?${q}`),
      getJSON(`/api/v1/events?${q}&days=30&by=source`),
      state.period === 'week' ? getJSON(`/api/v1/retention?${q}&period=week`) : null,
      getJSON(`/api/v1/lifecycle?${q}&period=day&periods=30`),
    ]);
    return { apps, summary, sources, retention, lifecycle };
  }

  // One refresh: fetch everything, then draw everything (so a failure leaves the old
  // numbers on screen, not a half-updated page).
  function refresh() {
    if (state.inFlight) {
      // A setting changed mid-flight: fetch once more when this one is done.
      state.again = true;
      return state.inFlight;
    }
    state.lastAttempt = Date.now();
    document.body.classList.add('refreshing');
    state.inFlight = load()
      .then((data) => {
        render(data);
        state.lastGood = Date.now();
        state.refreshes += 1;
        document.body.dataset.refreshes = String(state.refreshes);
        $('error-box').hidden = true;
      })
      .catch((error) => {
        const when = state.lastGood ? ` The numbers below are from ${clock(new Date(state.lastGood))}.` : '';
        const text = error instanceof HttpError && error.status === 503
          ? 'The aggregator has not computed the metrics yet; retrying.'
          : `Could not refresh (${error.message}).${when}`;
        $('error-text').textContent = text;
        $('error-box').hidden = false;
      })
      .finally(() => {
        state.inFlight = null;
        document.body.classList.remove('refreshing');
        checkStale();
        if (state.again) {
          state.again = false;
          refresh();
        }
      });
    return state.inFlight;
  }

  // ---- scheduling: every refreshMs while visible -----------------------------------

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(tick, Math.max(0, delay));
  }

  // A refresh, then the next one a whole period later (asked-for refreshes restart the count).
  function refreshAndSchedule() {
    return refresh().finally(() => schedule(refreshMs));
  }

  function tick() {
    state.timer = null;
    if (document.hidden) return; // visibilitychange resumes
    refreshAndSchedule();
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(state.timer);
      state.timer = null;
      $('refresh-every').textContent = 'paused while the tab is hidden';
    } else {
      $('refresh-every').textContent = every(refreshMs);
      schedule(state.lastAttempt + refreshMs - Date.now());
    }
  });

  function every(ms) {
    const s = Math.round(ms / 1000);
    if (s % 3600 === 0) return `${s / 3600} h`;
    if (s % 60 === 0) return `${s / 60} min`;
    return `${s} s`;
  }

  // ---- staleness ------------------------------------------------------------------

  function checkStale() {
    const now = Date.now();
    const warnings = [];
    if (state.lastGood && now - state.lastGood > STALE_AFTER_PERIODS * refreshMs) {
      warnings.push(`The last successful refresh was ${ago(now - state.lastGood)} ago; these numbers may be out of date.`);
    }
    const s = state.summary;
    if (s && state.serverDate) {
      // The server's "now", moved on by the time since its last answer.
      const serverNow = state.serverDate + (now - state.serverDateAt);
      const age = serverNow - Date.parse(s.generated_at);
      const period = Math.max(refreshMs, (s.refresh_interval_seconds || 60) * 1000);
      if (age > STALE_AFTER_PERIODS * period) {
        warnings.push(`The aggregator last computed these metrics ${ago(age)} ago (is ClickHouse reachable?).`);
      }
    }
    $('stale-text').textContent = warnings.join(' ');
    $('stale-warning').hidden = warnings.length === 0;
    document.body.dataset.stale = String(warnings.length > 0);
  }

  function ago(ms) {
    const min = Math.round(ms / 60000);
    if (min < 1) return `${Math.round(ms / 1000)} s`;
    if (min < 120) return `${min} min`;
    return `${Math.round(min / 60)} h`;
  }

  function clock(date) {
    const tz = state.summary ? state.summary.timezone : 'UTC';
    try {
      return new Intl.DateTimeFormat('en-CA', {
        timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
      }).format(date).replace(',', '');
    } catch (_) {
      return date.toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
    }
  }

  // ---- rendering ------------------------------------------------------------------

  function render(data) {
    if (data.empty) {
      $('app-name').textContent = 'no events yet';
      $('error-text').textContent = 'No events yet: send growth events to the collector (see the README).';
      $('error-box').hidden = false;
      return;
    }
    const s = data.summary;
    state.summary = s;
    $('app-name').textContent = s.app;
    document.title = `Growth · ${s.app}`;
    $('timezone').textContent = s.timezone;
    $('today').textContent = s.today;
    const refreshed = new Date();
    const time = $('last-refresh');
    time.textContent = clock(refreshed);
    time.setAttribute('datetime', refreshed.toISOString());
    time.title = `numbers computed by the aggregator at ${s.generated_at}`;
    renderCards(s);
    renderTrend();
    state.retention = state.period === 'week' ? data.retention : {
      period: 'day', days: s.retention_days, cohorts: s.cohorts,
    };
    renderRetention(state.retention);
    renderTotals(s.totals);
    renderSources(data.sources);
    renderLifecycle(data.lifecycle);
  }

  function renderAppSelect(names) {
    const select = $('app-select');
    const current = [...select.options].map((o) => o.value).join('\n');
    if (current !== names.join('\n')) {
      select.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
    }
    if (state.app) select.value = state.app;
    select.hidden = names.length < 2;
  }

  const WINDOWS = [
    ['dau', '1d', 'yesterday'],
    ['wau', '7d', 'prior 7 days'],
    ['mau', '30d', 'prior 30 days'],
  ];

  function renderCards(s) {
    for (const [id, window, before] of WINDOWS) {
      const now = s.active_users[window];
      const prev = s.previous_active_users ? s.previous_active_users[window] : null;
      setCard(id, now, number.format(now), change(now, prev, before, (d) => number.format(Math.abs(d))));
    }
    const st = s.stickiness;
    setCard('stickiness', st, st === null ? 'n/a' : percent(st),
      st === null ? 'no monthly users yet'
        : change(st, s.previous_stickiness, 'yesterday', (d) => `${Math.abs(d * 100).toFixed(1)} pt`, true));
  }

  function setCard(id, raw, text, changeNode) {
    const card = $('card-' + id);
    card.dataset.value = raw === null ? '' : String(raw);
    card.querySelector('[data-role=value]').textContent = text;
    const slot = card.querySelector('[data-role=change]');
    slot.replaceChildren(changeNode);
  }

  // "▲ 5 (+12.5 %) vs yesterday"; relative change only where it means something.
  function change(now, prev, before, absText, points) {
    if (prev === null || prev === undefined) return `no figure for ${before}`;
    const diff = now - prev;
    const frag = document.createDocumentFragment();
    if (diff === 0) {
      frag.append(icon('dash'), `same as ${before}`);
      return frag;
    }
    const rel = !points && prev > 0 ? ` (${diff > 0 ? '+' : '−'}${Math.abs((diff / prev) * 100).toFixed(1)} %)` : '';
    frag.append(icon(diff > 0 ? 'arrow-up-short' : 'arrow-down-short'),
      `${diff > 0 ? '+' : '−'}${absText(diff)}${rel} vs ${before}`);
    return frag;
  }

  // The 90-day trend is an SVG drawn by the server (/admin/metrics/trend.svg), asked for
  // at the width the page has, again whenever the numbers were recomputed.
  function renderTrend() {
    const s = state.summary;
    if (!s) return;
    const box = $('trend');
    const width = Math.max(300, Math.min(2000, Math.round(box.clientWidth || 900)));
    const src = `/admin/metrics/trend.svg?app=${encodeURIComponent(s.app)}&days=90&w=${width}`
      + `&at=${encodeURIComponent(s.generated_at)}`;
    let img = box.querySelector('img');
    if (!img) {
      img = el('img', { class: 'trend-img', alt: 'DAU, WAU and MAU over the last 90 days' });
      box.replaceChildren(img);
    }
    if (img.getAttribute('src') !== src) img.setAttribute('src', src);
  }

  function classify(ratio) {
    const pct = ratio * 100;
    if (pct >= settings.thresholds.good) return 'good';
    if (pct >= settings.thresholds.fair) return 'fair';
    return 'poor';
  }

  const STATUS_TEXT = { pending: 'pending', empty: 'no users' };

  function renderRetention(r) {
    const unit = r.period === 'week' ? 'W' : 'D';
    const table = $('retention-table');
    table.dataset.period = r.period;
    table.tHead.replaceChildren(el('tr', {},
      el('th', { scope: 'col', text: r.period === 'week' ? 'Cohort week' : 'Cohort' }),
      el('th', { scope: 'col', class: 'text-end', text: 'Users' }),
      ...r.days.map((n) => el('th', { scope: 'col', text: `${unit}${n}` }))));
    const rows = r.cohorts.map((c) => {
      const cells = r.days.map((n) => {
        const v = c.retention.find((x) => x.day === n) || { day: n, status: 'pending', users: null, ratio: null };
        return retentionCell(c, v, r.period);
      });
      return el('tr', { 'data-cohort': c.cohort },
        cohortHeader(c.cohort, r.period),
        el('td', { class: 'users', text: number.format(c.users) }),
        ...cells);
    });
    table.tBodies[0].replaceChildren(...rows);
    $('retention-caption').textContent = r.period === 'week'
      ? 'Share of each weekly cohort (first event Monday to Sunday) active again in week N after.'
      : 'Share of each daily cohort (users whose first event fell on that day) active again on day N.';
    for (const b of document.querySelectorAll('[data-period]')) {
      const on = b.dataset.period === r.period;
      b.classList.toggle('active', on);
      b.setAttribute('aria-pressed', String(on));
    }
  }

  // On a phone the year is dropped from the cohort's date (it is in the "Today" line).
  function cohortHeader(cohort, period) {
    const th = el('th', { scope: 'row', class: 'fw-normal' });
    if (period === 'week') th.append(el('span', { class: 'd-none d-sm-inline', text: 'week of ' }));
    th.append(el('span', { class: 'd-none d-sm-inline', text: cohort.slice(0, 5) }), cohort.slice(5));
    return th;
  }

  function retentionCell(cohort, v, period) {
    const status = cohort.users === 0 ? 'empty' : v.status;
    const td = el('td', { class: 'cell', 'data-day': String(v.day), 'data-status': status });
    const span = period === 'week' ? 'week' : 'day';
    if ((status === 'final' || status === 'in_progress') && v.ratio !== null) {
      const level = classify(v.ratio);
      td.classList.add('cell-' + level);
      td.dataset.level = level;
      td.dataset.ratio = String(v.ratio);
      td.append(percent(v.ratio));
      if (status === 'in_progress') {
        td.classList.add('cell-in-progress');
        td.append(el('small', { text: 'so far' }));
      }
      td.title = `${number.format(v.users)} of ${number.format(cohort.users)} users active in ${span} ${v.day}`
        + (status === 'in_progress' ? ` (${span} in progress: can still grow)` : '');
    } else {
      td.classList.add(status === 'empty' ? 'cell-empty' : 'cell-pending');
      td.textContent = STATUS_TEXT[status] || status;
      td.title = status === 'empty' ? 'no users in this cohort' : `${span} ${v.day} has not come yet`;
    }
    return td;
  }

  function renderTotals(totals) {
    const items = totals.map((t) => el('li', { class: 'list-group-item d-flex align-items-center gap-3', 'data-event': t.event },
      el('span', { class: 'total-icon' }, icon(settings.event_icons[t.event] || 'activity')),
      el('div', { class: 'flex-grow-1' },
        el('div', { class: 'total-label', text: settings.event_labels[t.event] || t.event }),
        el('div', { class: 'total-event', text: t.event })),
      el('span', { class: 'total-count', 'data-count': String(t.count), text: number.format(t.count) })));
    if (items.length === 0) items.push(el('li', { class: 'list-group-item text-body-secondary', text: 'no events yet' }));
    $('totals').replaceChildren(...items);
  }

  const SOURCES = {
    messenger: ['Messenger', 'chat-dots'],
    form: ['Form', 'ui-checks'],
    pwa: ['PWA', 'app-indicator'],
    '': ['no source', 'question-circle'],
  };

  function renderSources(events) {
    const sums = new Map(events.keys.map((k) => [k, 0]));
    for (const d of events.days) {
      for (const [k, v] of Object.entries(d.counts)) sums.set(k, (sums.get(k) || 0) + v);
    }
    const rows = [...sums.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const total = rows.reduce((acc, [, v]) => acc + v, 0);
    const bar = $('source-bar');
    bar.replaceChildren(...rows.map(([k, v], i) => {
      const seg = el('span', { class: `src-${Math.min(i, 5)}`, title: k });
      seg.style.width = total ? `${(v / total) * 100}%` : '0';
      return seg;
    }));
    const body = $('sources').tBodies[0];
    if (rows.length === 0) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: '3', class: 'text-body-secondary', text: 'no events in the last 30 days' })));
      return;
    }
    body.replaceChildren(...rows.map(([k, v], i) => {
      const [label, iconId] = SOURCES[k] || [k, 'diagram-3'];
      return el('tr', { 'data-source': k },
        el('td', {}, el('span', { class: `source-dot src-${Math.min(i, 5)}` }), icon(iconId, 'me-1'), label),
        el('td', { class: 'text-end', 'data-count': String(v), text: number.format(v) }),
        el('td', { class: 'text-end', text: total ? percent(v / total) : '–' }));
    }));
  }

  // Stacked bars, one per day: new, returning, resurrecting above the zero line,
  // dormant (negative in the API) below it; each bar carries its numbers as data-*.
  const LIFECYCLE = ['new', 'returning', 'resurrecting'];

  function renderLifecycle(lc) {
    const W = 900;
    const H = 220;
    const pad = { top: 8, bottom: 20, left: 36, right: 4 };
    const up = Math.max(1, ...lc.periods.map((p) => p.new + p.returning + p.resurrecting));
    const down = Math.max(0, ...lc.periods.map((p) => -p.dormant));
    const scale = (H - pad.top - pad.bottom) / (up + down);
    const zero = pad.top + up * scale;
    const step = (W - pad.left - pad.right) / Math.max(1, lc.periods.length);
    const svg = svgEl('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img', preserveAspectRatio: 'none',
      'aria-label': 'Lifecycle: new, returning, resurrecting and dormant persons per day',
      'data-lifecycle-period': lc.period,
    });
    svg.append(svgEl('line', { class: 'lc-axis', x1: pad.left, x2: W - pad.right, y1: zero, y2: zero }));
    for (const [value, y] of [[up, pad.top + 10], [-down, H - pad.bottom]]) {
      if (value === 0 && y !== pad.top + 10) continue;
      const t = svgEl('text', { class: 'lc-label', x: 2, y });
      t.textContent = number.format(value);
      svg.append(t);
    }
    lc.periods.forEach((p, i) => {
      const g = svgEl('g', {
        class: 'lc-bar' + (p.in_progress ? ' lc-in-progress' : ''),
        'data-start': p.start,
        'data-new': String(p.new),
        'data-returning': String(p.returning),
        'data-resurrecting': String(p.resurrecting),
        'data-dormant': String(p.dormant),
      });
      const x = pad.left + i * step + step * 0.1;
      const w = step * 0.8;
      let y = zero;
      for (const status of LIFECYCLE) {
        const h = p[status] * scale;
        y -= h;
        g.append(svgEl('rect', { class: `lc-${status}`, 'data-status': status, x, y, width: w, height: h }));
      }
      g.append(svgEl('rect', { class: 'lc-dormant', 'data-status': 'dormant', x, y: zero, width: w, height: -p.dormant * scale }));
      const title = svgEl('title', {});
      title.textContent = `${p.start}${p.in_progress ? ' (in progress)' : ''}: ${p.new} new, ${p.returning} returning, `
        + `${p.resurrecting} resurrecting, ${-p.dormant} dormant`;
      g.append(title);
      if ((lc.periods.length - 1 - i) % 7 === 0) {
        const label = svgEl('text', { class: 'lc-label', x, y: H - 4 });
        label.textContent = p.start.slice(5);
        g.append(label);
      }
      svg.append(g);
    });
    $('lifecycle').replaceChildren(svg);
  }

  // ---- export ---------------------------------------------------------------------

  function csvField(v) {
    const s = v === null || v === undefined ? '' : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  function cohortCsv(r, app) {
    const unit = r.period === 'week' ? 'W' : 'D';
    const head = ['app', 'period', 'cohort', 'users'];
    for (const n of r.days) head.push(`${unit}${n}_users`, `${unit}${n}_ratio`, `${unit}${n}_status`);
    const lines = [head];
    for (const c of r.cohorts) {
      const row = [app, r.period, c.cohort, c.users];
      for (const n of r.days) {
        const v = c.retention.find((x) => x.day === n) || { status: 'pending', users: null, ratio: null };
        row.push(v.users, v.ratio, c.users === 0 ? 'empty' : v.status);
      }
      lines.push(row);
    }
    return lines.map((l) => l.map(csvField).join(',')).join('\r\n') + '\r\n';
  }

  function downloadCsv() {
    if (!state.retention || !state.summary) return;
    const blob = new Blob([cohortCsv(state.retention, state.summary.app)], { type: 'text/csv;charset=utf-8' });
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: `growth-cohorts-${state.summary.app}-${state.retention.period}-${state.summary.today}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // ---- wiring ---------------------------------------------------------------------

  function start() {
    $('refresh-every').textContent = every(refreshMs);
    for (const [key, value] of Object.entries(settings.thresholds)) {
      for (const node of document.querySelectorAll(`[data-threshold=${key}]`)) node.textContent = String(value);
    }
    $('refresh-now').addEventListener('click', refreshAndSchedule);
    $('print').addEventListener('click', () => window.print());
    $('export-csv').addEventListener('click', downloadCsv);
    $('app-select').addEventListener('change', (e) => {
      state.app = e.target.value;
      const url = new URL(location.href);
      url.searchParams.set('app', state.app);
      history.replaceState(null, '', url);
      refreshAndSchedule();
    });
    for (const b of document.querySelectorAll('[data-period]')) {
      b.addEventListener('click', () => {
        if (state.period === b.dataset.period) return;
        state.period = b.dataset.period;
        refreshAndSchedule();
      });
    }
    let resizing = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizing);
      resizing = setTimeout(renderTrend, 200);
    });
    // Staleness is checked between refreshes too: a sleeping laptop wakes to a warning.
    setInterval(checkStale, Math.min(refreshMs, 30000));
    tick();
  }

  start();
}());
