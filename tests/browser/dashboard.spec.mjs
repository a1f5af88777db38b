// The admin dashboard in Debian's headless Chromium (run by tests/tests/dashboard_browser.rs,
// which starts the aggregator with data; `node dashboard.spec.mjs '<json config>'`).
//
// Asserts by itself and prints one JSON line: {"ok": true, "checks": [...], ...}.
// Every check compares the page with the server (/metrics, /admin/metrics.txt), never
// with numbers written here.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const base = new URL(config.url);
const authHeader = 'Basic ' + Buffer.from(`${config.user}:${config.password}`).toString('base64');
const checks = [];
const started = Date.now();
// The whole run must stay well under CI's patience.
const watchdog = setTimeout(() => fail('browser test took longer than 90 s'), 90_000);

function fail(message) {
  console.error(`FAIL: ${message}`);
  console.log(JSON.stringify({ ok: false, error: message, checks }));
  process.exit(1);
}

// `name` says what is checked; `detail` (shown on failure) which instance.
function check(name, condition, detail) {
  if (!condition) fail(`${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
  const seen = checks.find((c) => c.name === name);
  if (seen) seen.times += 1;
  else checks.push({ name, times: 1 });
}

async function get(path, auth = true) {
  const response = await fetch(new URL(path, base), { headers: auth ? { Authorization: authHeader } : {} });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

// Prometheus text → [{name, labels, value}] for one app.
async function metrics(app = config.app) {
  const { text } = await get('/metrics', false);
  const samples = [];
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (labels.app === undefined || labels.app === app) samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}
const one = (samples, name, labels = {}) => samples.find((s) => s.name === name
  && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

async function sendEvent(user, event, source) {
  const attr = (key, value) => ({ key, value: { stringValue: value } });
  const body = {
    resourceLogs: [{
      resource: { attributes: [attr('service.name', config.app)] },
      scopeLogs: [{
        logRecords: [{
          timeUnixNano: String(BigInt(Date.now()) * 1000000n),
          eventName: event,
          attributes: [attr('event.name', event), attr('user.id', user), attr('source', source)],
        }],
      }],
    }],
  };
  const r = await fetch(`${config.collector_http}/v1/logs`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  if (!r.ok) fail(`collector refused the event: HTTP ${r.status} ${await r.text()}`);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'growth-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: config.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  httpCredentials: { username: config.user, password: config.password },
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
});
try {
  await run();
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
clearTimeout(watchdog);
process.exit(0);

async function run() {
  const offsite = [];
  const consoleErrors = [];
  const apiCalls = [];
  context.on('request', (request) => {
    const url = new URL(request.url());
    if (url.protocol === 'blob:' || url.protocol === 'data:') return;
    if (url.origin !== base.origin) offsite.push(request.url());
    if (url.pathname.startsWith('/api/')) apiCalls.push(url.pathname + url.search);
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  let transferred = 0;
  page.on('requestfinished', async (request) => {
    try {
      const sizes = await request.sizes();
      transferred += sizes.responseBodySize + sizes.responseHeadersSize;
    } catch (_) { /* the page moved on */ }
  });

  // A controlled clock from the first script on: the auto-refresh timer is ours to move.
  await page.clock.install();
  // Two apps: the URL names the one to open (the first in name order otherwise).
  const response = await page.goto(new URL(`/admin/metrics?app=${encodeURIComponent(config.app)}`, base).href);
  check('page answers 200 with credentials', response.status() === 200, response.status());
  await page.waitForSelector('body[data-refreshes="1"]', { timeout: 15_000 });
  await page.waitForLoadState('networkidle');
  const pageBytes = transferred;
  check('page under 300 KB transferred', pageBytes > 0 && pageBytes < 300_000, pageBytes);

  // ---- the numbers equal /metrics --------------------------------------------------
  let m = await metrics();
  const card = async (id) => page.getAttribute(`#card-${id}`, 'data-value');
  for (const [id, window] of [['dau', '1d'], ['wau', '7d'], ['mau', '30d']]) {
    const expected = one(m, 'growth_active_users', { window });
    check('DAU/WAU/MAU cards equal /metrics', expected && Number(await card(id)) === expected.value, { page: await card(id), metrics: expected });
    const shown = await page.textContent(`#card-${id} [data-role=value]`);
    check('cards show the numbers', shown.replace(/,/g, '') === String(expected.value), shown);
  }
  const stickiness = one(m, 'growth_stickiness_ratio');
  if (stickiness) {
    check('stickiness card equals /metrics', Math.abs(Number(await card('stickiness')) - stickiness.value) < 1e-9, stickiness);
  }
  const changes = await page.$$eval('.kpi [data-role=change]', (els) => els.map((e) => e.textContent.trim()));
  check('every card shows its change vs the previous period', changes.every((t) => /vs |no figure|no monthly/.test(t)), changes);

  const cells = await page.$$eval('#retention-table tbody td.cell', (tds) => tds.map((td) => ({
    cohort: td.closest('tr').dataset.cohort,
    day: td.dataset.day,
    status: td.dataset.status,
    ratio: td.dataset.ratio === undefined ? null : Number(td.dataset.ratio),
    level: td.dataset.level || null,
    text: td.textContent.trim(),
    className: td.className,
    background: getComputedStyle(td).backgroundColor,
  })));
  check('heatmap has cells', cells.length > 0);
  const retention = m.filter((s) => s.name === 'growth_retention_ratio');
  check('/metrics has retention values to compare', retention.length > 0);
  for (const s of retention) {
    const cell = cells.find((c) => c.cohort === s.labels.cohort && c.day === s.labels.day);
    check('retention cell equals /metrics', cell && Math.abs(cell.ratio - s.value) < 1e-9, { cell, metric: s });
    check('retention cell shows its percentage', cell && cell.text.startsWith(`${(s.value * 100).toFixed(1)} %`), cell.text);
  }
  const cohortSizes = m.filter((s) => s.name === 'growth_cohort_users');
  for (const s of cohortSizes) {
    const users = await page.$eval(`#retention-table tr[data-cohort="${s.labels.cohort}"] td.users`, (td) => td.textContent);
    check('cohort size equals /metrics', Number(users.replace(/,/g, '')) === s.value, users);
  }
  for (const c of cells) {
    check('no pending or empty cell shows a number', !['pending', 'empty'].includes(c.status) || !/\d/.test(c.text), c);
    check('every cell carries text', c.text.length > 0, c);
  }
  const statuses = new Set(cells.map((c) => c.status));
  for (const s of ['final', 'in_progress', 'pending', 'empty']) check('heatmap shows final, in-progress, pending and empty cells', statuses.has(s), { missing: s, statuses: [...statuses] });
  check('in-progress cells say so', cells.filter((c) => c.status === 'in_progress').every((c) => c.text.includes('so far')));
  check('a D7 value is shown (not always empty)', cells.some((c) => c.day === '7' && c.status === 'final'));

  // ---- colours follow the thresholds -----------------------------------------------
  const { good, fair } = config.thresholds;
  const legend = await page.$$eval('#retention-legend .cell-chip', (chips) => Object.fromEntries(chips.map((c) => [
    c.className.split(' ').find((k) => k.startsWith('cell-') && k !== 'cell-chip'), getComputedStyle(c).backgroundColor])));
  const levels = new Set();
  for (const c of cells.filter((x) => x.ratio !== null)) {
    const pct = c.ratio * 100;
    const expected = pct >= good ? 'good' : pct >= fair ? 'fair' : 'poor';
    levels.add(expected);
    check('cell level follows the thresholds', c.level === expected && c.className.includes(`cell-${expected}`), c);
    check('cell has the legend colour of its level', c.background === legend[`cell-${expected}`], { cell: c.background, legend });
  }
  check('all three colours appear', levels.size === 3, [...levels]);
  const legendText = await page.textContent('#retention-legend');
  check('legend states the configured thresholds', legendText.includes(`≥ ${good} %`) && legendText.includes(`< ${fair} %`), legendText);

  // ---- running totals, labels, icons, sources ----------------------------------------
  const totals = await page.$$eval('#totals li[data-event]', (lis) => lis.map((li) => ({
    event: li.dataset.event,
    label: li.querySelector('.total-label').textContent,
    count: Number(li.querySelector('.total-count').dataset.count),
    icon: li.querySelector('svg use').getAttribute('href'),
  })));
  for (const s of m.filter((x) => x.name === 'growth_events_total')) {
    const t = totals.find((x) => x.event === s.labels.event);
    check('running total equals /metrics', t && t.count === s.value, { t, s });
  }
  for (const [event, label] of Object.entries(config.labels)) {
    check('events carry their configured display names', totals.some((t) => t.event === event && t.label === label), totals);
  }
  check('every total has an icon from the vendored sprite', totals.every((t) => /^\/admin\/assets\/icons\.svg\?v=\w+#[\w-]+$/.test(t.icon)), totals);
  const sources = await page.$$eval('#sources tbody tr[data-source]', (trs) => trs.map((tr) => tr.dataset.source));
  check('per-source breakdown lists messenger, form and pwa', ['messenger', 'form', 'pwa'].every((s) => sources.includes(s)), sources);
  check('source breakdown came from /api/v1/events?by=source', apiCalls.some((c) => c.startsWith('/api/v1/events') && c.includes('by=source')), apiCalls);
  // ---- lifecycle bars -------------------------------------------------------------------
  const lcApi = JSON.parse((await get(`/api/v1/lifecycle?app=${encodeURIComponent(config.app)}&period=day&periods=30`)).text);
  const bars = await page.$$eval('#lifecycle g.lc-bar', (gs) => gs.map((g) => ({
    start: g.dataset.start,
    values: ['new', 'returning', 'resurrecting', 'dormant'].map((k) => Number(g.dataset[k])),
    heights: Object.fromEntries([...g.querySelectorAll('rect')].map((r) => [r.dataset.status, Number(r.getAttribute('height'))])),
  })));
  check('lifecycle came from /api/v1/lifecycle', apiCalls.some((c) => c.startsWith('/api/v1/lifecycle')), apiCalls);
  check('one lifecycle bar per day of /api/v1/lifecycle', bars.length === 30 && bars.length === lcApi.periods.length, { bars: bars.length });
  let scale = null;
  for (const [i, p] of lcApi.periods.entries()) {
    const b = bars[i];
    const want = [p.new, p.returning, p.resurrecting, p.dormant];
    check('lifecycle bar matches the API', b.start === p.start && b.values.every((v, k) => v === want[k]), { b, p });
    for (const [k, status] of ['new', 'returning', 'resurrecting', 'dormant'].entries()) {
      const value = Math.abs(want[k]);
      if (value === 0) {
        check('an empty lifecycle segment has no height', b.heights[status] === 0, { b, status });
        continue;
      }
      scale = scale === null ? b.heights[status] / value : scale;
      check('lifecycle segments are drawn to one scale', Math.abs(b.heights[status] / value - scale) < 1e-6 * scale, { b, status, scale });
    }
  }
  check('the lifecycle shows persons', scale !== null, lcApi.periods);
  const yesterday = lcApi.periods[lcApi.periods.length - 2];
  for (const status of ['new', 'returning', 'resurrecting', 'dormant']) {
    const s = one(m, 'growth_lifecycle_users', { period: 'day', status });
    check("yesterday's lifecycle bar equals /metrics", s && s.value === yesterday[status], { s, yesterday });
  }

  await page.waitForFunction(() => {
    const img = document.querySelector('#trend img');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 10_000 });
  const trend = await page.evaluate(async () => {
    const r = await fetch(document.querySelector('#trend img').src);
    return { type: r.headers.get('content-type'), svg: await r.text() };
  });
  check('90-day trend is a server-drawn SVG of DAU, WAU and MAU', trend.type === 'image/svg+xml'
    && trend.svg.includes('data-days="90"') && (trend.svg.match(/<polyline/g) || []).length === 3, trend);
  const dauNow = one(m, 'growth_active_users', { window: '1d' }).value;
  check('the trend ends with today\'s DAU', new RegExp(`<title>DAU: ${dauNow} on `).test(trend.svg), trend.svg.slice(-400));
  const status = await page.textContent('.status-line');
  check('last refresh and timezone are visible', /Last refresh \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.test(status) && status.includes('Timezone'), status);
  check('no stale warning on fresh data', await page.isHidden('#stale-warning'));

  // ---- exports ----------------------------------------------------------------------
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-text')]);
  check('text export is named for the day', /^growth-report-\d{4}-\d\d-\d\d\.txt$/.test(download.suggestedFilename()), download.suggestedFilename());
  const exported = readFileSync(await download.path(), 'utf8');
  const server = (await get('/admin/metrics.txt')).text;
  const withoutTime = (t) => t.split('\n').filter((l) => !l.startsWith('generated at')).join('\n');
  check('text export is the plain-text report', withoutTime(exported) === withoutTime(server), { exported, server });
  const [csvDownload] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
  check('CSV export is named', /^growth-cohorts-.*-day-\d{4}-\d\d-\d\d\.csv$/.test(csvDownload.suggestedFilename()), csvDownload.suggestedFilename());
  const csv = readFileSync(await csvDownload.path(), 'utf8').trim().split(/\r?\n/).map((l) => l.split(','));
  const header = csv[0];
  check('CSV header names cohort, users and day columns', header[2] === 'cohort' && header[3] === 'users' && header.includes('D1_ratio'), header);
  const rows = await page.$$eval('#retention-table tbody tr', (trs) => trs.map((tr) => tr.dataset.cohort));
  check('CSV has one row per cohort shown', csv.length - 1 === rows.length, { csv: csv.length - 1, rows: rows.length });
  for (const c of cells) {
    const row = csv.find((r) => r[2] === c.cohort);
    const value = row && row[header.indexOf(`D${c.day}_ratio`)];
    check('CSV value matches the table', c.ratio === null ? value === '' : Math.abs(Number(value) - c.ratio) < 1e-12, { value, c });
  }

  // ---- weekly cohorts -----------------------------------------------------------------
  await page.click('[data-period=week]');
  await page.waitForSelector('#retention-table[data-period=week]');
  const weekHead = await page.$$eval('#retention-table thead th', (ths) => ths.map((t) => t.textContent));
  check('weekly view has W columns', weekHead.includes('W1'), weekHead);
  check('weekly view came from /api/v1/retention?period=week', apiCalls.some((c) => c.includes('period=week')), apiCalls);
  await page.click('[data-period=day]');
  await page.waitForSelector('#retention-table[data-period=day]');

  // ---- the app selector: several apps, each with its own numbers -----------------------
  const options = await page.$$eval('#app-select option', (os) => os.map((o) => o.value));
  check('app selector offers every app', await page.isVisible('#app-select')
    && [config.app, config.other_app].every((a) => options.includes(a)), options);
  let refreshes = Number(await page.getAttribute('body', 'data-refreshes'));
  await page.selectOption('#app-select', config.other_app);
  await page.waitForSelector(`body[data-refreshes="${refreshes + 1}"]`);
  const other = one(await metrics(config.other_app), 'growth_active_users', { window: '1d' });
  check('switching app shows that app', (await page.textContent('#app-name')) === config.other_app
    && Number(await card('dau')) === other.value && page.url().includes(`app=${config.other_app}`), { other, url: page.url() });
  refreshes += 1;
  await page.selectOption('#app-select', config.app);
  await page.waitForSelector(`body[data-refreshes="${refreshes + 1}"]`);

  // ---- screenshots: desktop, phone, print ----------------------------------------------
  await page.screenshot({ path: join(config.screenshots, 'dashboard-desktop.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(400); // the trend redraws at the new width after 200 ms
  await page.clock.runFor(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check('usable on a phone: nothing wider than the screen', overflow <= 0, overflow);
  await page.screenshot({ path: join(config.screenshots, 'dashboard-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 794, height: 1123 });
  await page.emulateMedia({ media: 'print' });
  const controls = await page.$$eval('.controls, #refresh-now, #export-text, #export-csv, #print, #app-select, button[data-period]', (els) => els.map((e) => e.checkVisibility()));
  check('print media hides every control', controls.length >= 5 && controls.every((v) => !v), controls);
  check('print media keeps the numbers', await page.isVisible('#card-dau') && await page.isVisible('#retention-table'));
  const printOverflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check('print fits the A4 width', printOverflow <= 0, printOverflow);
  await page.screenshot({ path: join(config.screenshots, 'dashboard-print.png'), fullPage: true });
  const pdf = await page.pdf({ format: 'A4', printBackground: true, preferCSSPageSize: true });
  writeFileSync(join(config.screenshots, 'dashboard-print.pdf'), pdf);
  const pdfPages = (pdf.toString('latin1').match(/\/Type\s*\/Page[^s]/g) || []).length;
  check('print is a few A4 pages', pdfPages >= 1 && pdfPages <= 3, pdfPages);
  await page.emulateMedia({ media: 'screen' });
  await page.setViewportSize({ width: 1280, height: 900 });

  // ---- auto-refresh: not before the interval, then new data without a reload ---------
  // "Refresh" restarts the period; then the clock stops flowing by itself, so only
  // runFor moves the page's time.
  const summaries = () => apiCalls.filter((c) => c.startsWith('/api/v1/summary')).length;
  const refreshesClicked = Number(await page.getAttribute('body', 'data-refreshes'));
  await page.click('#refresh-now');
  await page.waitForSelector(`body[data-refreshes="${refreshesClicked + 1}"]`);
  await page.clock.pauseAt(await page.evaluate(() => Date.now() + 50));
  const before = summaries();
  const refreshesBefore = Number(await page.getAttribute('body', 'data-refreshes'));
  const dauBefore = Number(await card('dau'));
  await sendEvent(`late-user-${Date.now()}`, 'expense_logged', 'pwa');
  const deadline = Date.now() + 20_000;
  do {
    m = await metrics();
    if (one(m, 'growth_active_users', { window: '1d' }).value > dauBefore) break;
    await new Promise((r) => setTimeout(r, 200));
  } while (Date.now() < deadline);
  const dauAfter = one(m, 'growth_active_users', { window: '1d' }).value;
  check('the new user reached /metrics', dauAfter === dauBefore + 1, { dauBefore, dauAfter });
  let navigations = 0;
  page.on('framenavigated', () => { navigations += 1; });
  await page.clock.runFor((config.refresh_seconds - 10) * 1000);
  await page.waitForTimeout(300);
  check('no refresh before the interval', summaries() === before && Number(await card('dau')) === dauBefore, { calls: summaries(), before });
  await page.clock.runFor(20_000);
  await page.waitForSelector(`body[data-refreshes="${refreshesBefore + 1}"]`, { timeout: 10_000 });
  check('refreshed once the interval passed', summaries() === before + 1, { calls: summaries(), before });
  check('the page shows the new DAU', Number(await card('dau')) === dauAfter, await card('dau'));
  check('without a page reload', navigations === 0, navigations);

  // ---- paused while hidden, at once when visible again ------------------------------
  const setHidden = (hidden) => page.evaluate((h) => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
  const whileHidden = summaries();
  const refreshesHidden = Number(await page.getAttribute('body', 'data-refreshes'));
  await setHidden(true);
  await page.clock.runFor(2 * config.refresh_seconds * 1000);
  await page.waitForTimeout(300);
  check('no refresh while the tab is hidden', summaries() === whileHidden, { calls: summaries(), whileHidden });
  check('the page says auto-refresh is paused', (await page.textContent('#refresh-every')).includes('paused'));
  await setHidden(false);
  await page.clock.runFor(100);
  await page.waitForSelector(`body[data-refreshes="${refreshesHidden + 1}"]`, { timeout: 10_000 });
  check('an overdue refresh happens as soon as the tab is visible', summaries() === whileHidden + 1);

  // ---- stale warning: refreshes failing for more than 3 intervals -------------------
  const errorsBefore = consoleErrors.length;
  await page.route('**/api/v1/**', (route) => route.fulfill({ status: 500, contentType: 'application/json', body: '{"error":"test outage"}' }));
  for (let i = 0; i < 4; i += 1) {
    await page.clock.runFor(config.refresh_seconds * 1000);
    await page.waitForTimeout(200);
  }
  check('failed refreshes are reported', await page.isVisible('#error-box')
    && (await page.textContent('#error-text')).includes('test outage'), await page.textContent('#error-text'));
  check('stale warning after 3 intervals without a good refresh', await page.isVisible('#stale-warning'), await page.textContent('#stale-text'));
  check('the old numbers stay on screen', Number(await card('dau')) === dauAfter);
  await page.unroute('**/api/v1/**');
  // The browser logged each refused request; those errors were caused on purpose.
  consoleErrors.splice(errorsBefore, consoleErrors.length - errorsBefore,
    ...consoleErrors.slice(errorsBefore).filter((e) => !/status of 500/.test(e)));
  const refreshesStale = Number(await page.getAttribute('body', 'data-refreshes'));
  await page.clock.runFor(config.refresh_seconds * 1000);
  await page.waitForSelector(`body[data-refreshes="${refreshesStale + 1}"]`, { timeout: 10_000 });
  check('the warning goes once a refresh succeeds', await page.isHidden('#stale-warning') && await page.isHidden('#error-box'));

  // ---- 401 without credentials: the browser omitting them, from a same-origin page ------
  const anonymous = await context.newPage();
  await anonymous.goto(new URL('/favicon.ico', base).href);
  const codes = await anonymous.evaluate(async () => Promise.all(['/admin/metrics', '/admin/metrics.txt', '/api/v1/apps', '/metrics'].map(
    async (p) => (await fetch(p, { credentials: 'omit', cache: 'no-store' })).status)));
  await anonymous.close();
  check('401 without credentials on /admin and /api, /metrics open', JSON.stringify(codes) === JSON.stringify([401, 401, 401, 200]), codes);

  check('no console errors', consoleErrors.length === 0, consoleErrors);
  check('no request leaves the origin', offsite.length === 0, offsite);

  console.log(JSON.stringify({
    ok: true,
    checks,
    page_bytes_transferred: pageBytes,
    pdf_pages: pdfPages,
    duration_ms: Date.now() - started,
  }));
}
