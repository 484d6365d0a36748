// OHIF v3 in headless Chromium against a static DICOMweb site.
//
//   node clients/ohif/viewer-test.mjs --ohif http://127.0.0.1:3000/ --out DIR
//        [--site http://127.0.0.1:8080] [--mode "Basic Viewer"] [--timeout 120]
//
// Opens OHIF's study list, waits for the study rows, selects the first study whose Modalities
// cell names CT, launches it in the viewer (the study list's "Launch workflow" button), and
// waits until the active viewport shows CT pixels: the viewport's pixels (a screenshot of its
// element, measured in the page) must be non-blank, with enough distinct grey levels and
// spread to be an image rather than a blank, a uniform or a text-only area; the viewport's own
// canvas is read too (result.steps.viewport.canvas: its distinct pixel values and range).
// --ohif may be OHIF at the root of its own server (serve_ohif.py) or under /viewer/ of the
// site's server (`static-dicomweb serve SITE --viewer`); --site is the site's DICOMweb root.
// Then shows every series of the study in the viewport (4-series-N.png), scrolls the largest to
// its middle slice (5-viewer-middle-slice.png) and opens it as MPR (6-viewer-mpr.png).
// Writes to DIR: 1-study-list.png, 2-study-selected.png, 3-viewer.png, requests.log (every
// request the page makes with its response status and content type, or its failure),
// console.log (console messages and page errors), result.json. Exit 0 when CT pixels show;
// 1 with a message naming what was missing otherwise; 2 on usage errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
    return acc;
  }, []),
);
if (!args.ohif || !args.out) {
  console.error('usage: viewer-test.mjs --ohif URL --out DIR [--site URL] [--mode NAME] [--timeout S]');
  process.exit(2);
}
const OHIF = args.ohif.endsWith('/') ? args.ohif : `${args.ohif}/`;
const OUT = path.resolve(args.out);
const MODE = args.mode || 'Basic Viewer';
const TIMEOUT = 1000 * Number(args.timeout || 120);
const SITE = args.site ? new URL(args.site).origin : null;
fs.mkdirSync(OUT, { recursive: true });

const t0 = Date.now();
const since = () => ((Date.now() - t0) / 1000).toFixed(2);
const requests = [];
const consoleLines = [];
const result = { ok: false, ohif: OHIF, site: SITE, mode: MODE, steps: {} };

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ohif-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1600, height: 1000 },
  serviceWorkers: 'block',
});

function finish(ok, message) {
  result.ok = ok;
  result.message = message;
  result.seconds = Number(since());
  result.requests = {
    total: requests.length,
    // the site's own requests (OHIF's build may be served by the same origin, under /viewer/)
    site: requests.filter((r) => SITE && r.url.startsWith(SITE) && !r.url.startsWith(OHIF)).length,
    failed: requests.filter((r) => r.failure || r.status >= 400).map((r) => `${r.status ?? r.failure} ${r.url}`),
  };
  result.pageErrors = consoleLines.filter((l) => l.includes(' pageerror ')).length;
  fs.writeFileSync(path.join(OUT, 'requests.log'), requests.map((r) =>
    `${r.t}s ${r.method} ${r.url} -> ${r.status ?? 'FAILED ' + r.failure} ${r.type ?? ''} ${r.encoding ?? ''}`.trimEnd()).join('\n') + '\n');
  fs.writeFileSync(path.join(OUT, 'console.log'), consoleLines.join('\n') + '\n');
  fs.writeFileSync(path.join(OUT, 'result.json'), JSON.stringify(result, null, 2) + '\n');
  console.log(`${ok ? 'OK' : 'FAIL'}: ${message} (${result.seconds} s; ${result.requests.total} requests, ` +
    `${result.requests.site} to the site, ${result.requests.failed.length} failed; artefacts in ${OUT})`);
  for (const f of result.requests.failed.slice(0, 20)) console.log(`  failed request: ${f}`);
}

async function shot(page, name) {
  const file = path.join(OUT, name);
  await page.screenshot({ path: file });
  result.screenshots = [...(result.screenshots || []), file];
}

// pixel statistics of an element's on-screen pixels, computed in the page from a PNG screenshot
async function pixelStats(page, locator) {
  const png = await locator.screenshot({ timeout: 10000 });
  return page.evaluate(async (b64) => {
    const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
    const bitmap = await createImageBitmap(blob);
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const { data } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    const n = data.length / 4;
    let sum = 0; let sum2 = 0; let nonBlack = 0; let grey = 0;
    const levels = new Set();
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      const y = 0.299 * r + 0.587 * g + 0.114 * b;
      sum += y; sum2 += y * y;
      if (y > 8) nonBlack += 1;
      if (y > 8 && Math.abs(r - g) < 6 && Math.abs(g - b) < 6) { grey += 1; levels.add(r); }
    }
    const mean = sum / n;
    return {
      width: bitmap.width, height: bitmap.height, mean: +mean.toFixed(2),
      std: +Math.sqrt(Math.max(0, sum2 / n - mean * mean)).toFixed(2),
      nonBlackFraction: +(nonBlack / n).toFixed(4), greyFraction: +(grey / n).toFixed(4), greyLevels: levels.size,
    };
  }, png.toString('base64'));
}
// a CT slice in a viewport: a good part of it lit, in many grey levels (text overlays alone are
// a few per cent of the area; a uniform fill has one level)
const looksLikeCT = (s) => s && s.greyFraction > 0.05 && s.greyLevels >= 32 && s.std > 10;

async function waitForCT(locator, ms, test = looksLikeCT) {
  const until = Date.now() + ms;
  let stats = null;
  for (;;) {
    stats = await pixelStats(locator.page(), locator).catch((e) => ({ error: String(e) }));
    if (test(stats) || Date.now() > until) return stats;
    await locator.page().waitForTimeout(500);
  }
}

// the viewport's own canvas (cornerstone draws each rendered frame into a 2D canvas): its size,
// how many distinct RGBA values it holds and the range of its red channel; null when it has none
async function canvasStats(locator) {
  return locator.evaluate((el) => {
    const canvas = el.querySelector('canvas');
    if (!canvas || !canvas.width || !canvas.height) return null;
    let ctx = canvas.getContext('2d', { willReadFrequently: true });
    let source = canvas;
    if (!ctx) { // a WebGL canvas: copy it into a 2D one first
      source = new OffscreenCanvas(canvas.width, canvas.height);
      ctx = source.getContext('2d');
      ctx.drawImage(canvas, 0, 0);
    }
    const { data } = ctx.getImageData(0, 0, source.width, source.height);
    const values = new Set();
    let min = 255; let max = 0;
    for (let i = 0; i < data.length; i += 4) {
      values.add((data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]);
      min = Math.min(min, data[i]); max = Math.max(max, data[i]);
    }
    return { width: source.width, height: source.height, distinctValues: values.size, min, max };
  }).catch((e) => ({ error: String(e) }));
}

// the viewport's overlay names the series (a line of its own, exactly)
async function showing(page, description) {
  await page.waitForFunction((d) => {
    const el = document.querySelector('[data-cy="viewport-overlay-top-left"]');
    return el && el.innerText.split('\n').map((l) => l.trim()).includes(d);
  }, description, { timeout: 30000 });
}

// OHIF's first-visit tour ("Scrolling Through Images ... Skip all") covers part of the viewport
async function skipTour(page) {
  const skip = page.getByRole('button', { name: 'Skip all' });
  if (await skip.isVisible().catch(() => false)) await skip.click().catch(() => {});
}

// a reformatted slice of a short series fills less of its viewport
const looksLikeMprCT = (s) => s && s.greyFraction > 0.01 && s.greyLevels >= 16 && s.std > 5;

let exitCode = 1;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('request', (req) => requests.push({ t: since(), method: req.method(), url: req.url(), req }));
  page.on('response', (res) => {
    const r = requests.findLast((x) => x.req === res.request());
    if (r) Object.assign(r, { status: res.status(), type: res.headers()['content-type'], encoding: res.headers()['content-encoding'] });
  });
  page.on('requestfailed', (req) => {
    const r = requests.findLast((x) => x.req === req);
    if (r) r.failure = req.failure()?.errorText || 'failed';
  });
  page.on('console', (m) => consoleLines.push(`${since()}s console.${m.type()} ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`${since()}s pageerror ${e.stack || e.message}`));

  // 1. the study list
  await page.goto(OHIF, { waitUntil: 'domcontentloaded', timeout: TIMEOUT });
  // a study row has a cell per column; "No studies available" is one row with one cell
  const rows = page.locator('tbody tr:not([data-filter-row]):has(td:nth-child(3))');
  const empty = page.getByText('No studies available');
  try {
    await rows.or(empty).first().waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch {
    await shot(page, '1-study-list.png');
    throw new Error('the study list did not load (see console.log and requests.log)');
  }
  if (!(await rows.count())) {
    await shot(page, '1-study-list.png');
    const qido = requests.find((r) => SITE && r.url.startsWith(`${SITE}/studies`));
    throw new Error(`the study list shows "No studies available" (QIDO ${qido ? `${qido.url} -> ${qido.status ?? qido.failure}` : 'studies was never requested'})`);
  }
  result.steps.studyList = { seconds: Number(since()), rows: await rows.count(), text: (await rows.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')) };
  await shot(page, '1-study-list.png');

  // 2. the first CT study: select it, launch the viewer from the study's panel
  const ct = rows.filter({ has: page.locator('td', { hasText: /^[\s\\/,A-Z]*\bCT\b[\s\\/,A-Z]*$/ }) }).first();
  if (!(await ct.count())) throw new Error('no study row names CT');
  await ct.click();
  const launch = page.getByRole('button', { name: MODE, exact: true });
  try {
    await launch.waitFor({ state: 'visible', timeout: 30000 });
  } catch {
    await shot(page, '2-study-selected.png');
    throw new Error(`selecting the study shows no "${MODE}" button`);
  }
  await shot(page, '2-study-selected.png');
  result.steps.selected = { seconds: Number(since()) };
  await launch.click();
  // the viewer's route carries the study (OHIF's own routes may live under /viewer/ already)
  await page.waitForURL(/[?&]StudyInstanceUIDs=/, { timeout: 30000 });
  result.steps.viewerUrl = page.url();

  // 3. CT pixels in the active viewport
  const pane = page.locator('[data-cy="viewport-pane"]').first();
  try {
    await pane.waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch {
    await shot(page, '3-viewer.png');
    throw new Error('the viewer shows no viewport');
  }
  let stats = await waitForCT(pane, TIMEOUT);
  // let the series' other slices and the thumbnails arrive before the picture is taken
  await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
  stats = await pixelStats(page, pane).catch((e) => ({ error: String(e) }));
  result.steps.viewport = { seconds: Number(since()), stats, canvas: await canvasStats(pane) };
  result.steps.overlay = (await page.locator('[data-cy^="viewport-overlay"]').allInnerTexts().catch(() => [])).map((t) => t.replace(/\s+/g, ' ').trim()).filter(Boolean);
  // the study browser's thumbnails: each an <img> that loaded, or none
  await page.waitForFunction(() => {
    const all = [...document.querySelectorAll('[data-cy="study-browser-thumbnail"]')];
    return all.length && all.every((t) => { const i = t.querySelector('img'); return i && i.complete && i.naturalWidth > 0; });
  }, null, { timeout: 30000 }).catch(() => {});
  result.steps.thumbnails = await page.evaluate(() => [...document.querySelectorAll('[data-cy="study-browser-thumbnail"]')].map((t) => {
    const img = t.querySelector('img');
    return {
      description: t.querySelector('[data-cy="series-description-label"]')?.innerText.trim(),
      image: img ? (img.complete && img.naturalWidth > 0 ? `${img.naturalWidth}x${img.naturalHeight} ${img.src.slice(0, 5)}` : 'not loaded') : 'none',
    };
  }));
  result.steps.crossOriginIsolated = await page.evaluate(() => window.crossOriginIsolated);
  await skipTour(page);
  await shot(page, '3-viewer.png');
  if (!looksLikeCT(stats)) {
    throw new Error(`the viewport shows no CT pixels within ${TIMEOUT / 1000} s: ${JSON.stringify(stats)}`);
  }

  // 4. every series of the study in the viewport (each stored transfer syntax, multi-frame too)
  const thumbs = page.locator('[data-cy="study-browser-thumbnail"]');
  const series = [];
  for (let i = 0; i < (await thumbs.count()); i += 1) {
    const thumb = thumbs.nth(i);
    const description = (await thumb.locator('[data-cy="series-description-label"]').innerText()).trim();
    const count = Number(((await thumb.innerText()).match(/(\d+)\s*$/) || [0, 0])[1]);
    await thumb.dblclick();
    const entry = { description, count };
    series.push(entry);
    try {
      await showing(page, description);
      entry.stats = await waitForCT(pane, 60000);
      entry.slice = (await page.locator('[data-cy="viewport-overlay-bottom-right"]').first().innerText()).trim();
      entry.ok = looksLikeCT(entry.stats);
    } catch (e) {
      entry.ok = false;
      entry.error = e.message.split('\n')[0];
    }
    await pane.screenshot({ path: path.join(OUT, `4-series-${i + 1}.png`) });
  }
  result.steps.series = series;
  const bad = series.filter((x) => !x.ok);
  if (bad.length) throw new Error(`series without CT pixels: ${bad.map((x) => x.description).join('; ')}`);

  // 5. the series with the most images, scrolled to its middle slice
  const big = series.reduce((a, b) => (b.count > a.count ? b : a));
  await thumbs.nth(series.indexOf(big)).dblclick();
  await showing(page, big.description);
  await waitForCT(pane, 60000);
  const box = await pane.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  const middle = Math.ceil(big.count / 2);
  for (let k = 1; k < middle; k += 1) {
    await page.mouse.wheel(0, 120);
    await page.waitForTimeout(100);
  }
  const counter = page.locator('[data-cy="viewport-overlay-bottom-right"]').first();
  await counter.filter({ hasText: `(${middle}/${big.count})` }).waitFor({ timeout: 30000 })
    .catch(async () => { throw new Error(`scrolling did not reach slice ${middle}/${big.count}: the counter reads "${await counter.innerText()}"`); });
  const midStats = await waitForCT(pane, 60000);
  await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
  result.steps.middleSlice = { description: big.description, slice: (await counter.innerText()).trim(), stats: midStats };
  await shot(page, '5-viewer-middle-slice.png');
  if (!looksLikeCT(midStats)) throw new Error(`slice ${middle} of "${big.description}" shows no CT pixels: ${JSON.stringify(midStats)}`);

  // 6. MPR: the series as a volume (needs consistent geometry in the series metadata), three
  // viewports (axial, sagittal, coronal), each with CT pixels
  await page.locator('[data-cy="Layout"]').click();
  await page.getByText('MPR', { exact: true }).first().click();
  const panes = page.locator('[data-cy="viewport-pane"]');
  await page.waitForFunction(() => document.querySelectorAll('[data-cy="viewport-pane"]').length === 3, null, { timeout: 30000 })
    .catch(() => { throw new Error('the MPR layout did not show three viewports'); });
  const mpr = [];
  for (let i = 0; i < 3; i += 1) {
    const st = await waitForCT(panes.nth(i), 60000, looksLikeMprCT);
    mpr.push({ overlay: (await panes.nth(i).innerText()).replace(/\s+/g, ' ').trim(), stats: st, ok: looksLikeMprCT(st) });
  }
  result.steps.mpr = mpr;
  await shot(page, '6-viewer-mpr.png');
  if (mpr.some((m) => !m.ok)) throw new Error(`MPR: a viewport shows no CT pixels: ${JSON.stringify(mpr)}`);
  finish(true, `OHIF shows CT pixels from the site: ${series.length} series, each in the viewport; ` +
    `"${big.description}" slice ${middle}/${big.count} (${(100 * midStats.greyFraction).toFixed(1)}% grey pixels, ` +
    `${midStats.greyLevels} grey levels, std ${midStats.std}); MPR in 3 viewports`);
  exitCode = 0;
} catch (e) {
  finish(false, e.message);
} finally {
  await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
