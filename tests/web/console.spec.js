// Issue #15 acceptance in headless Chromium (Debian's /usr/bin/chromium) driven by
// Playwright. Started by tests/web_console.rs, which sets up PostgreSQL, SoftHSM2, the
// archive, two boxes with real SIPREC calls and `branchrec-central serve`, and passes
// what it made in $WEB_TEST_CONFIG (JSON). Each step prints "ok - …"; the first failure
// throws (exit 1). CommonJS: node_modules come from $NODE_PATH (a cache of `npm ci`).
"use strict";
const { chromium } = require("playwright");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const cfg = JSON.parse(fs.readFileSync(process.env.WEB_TEST_CONFIG, "utf8"));
const base = cfg.base;
const shot = (name) => path.join(cfg.artifacts, name);
let passed = 0;
const ok = (m) => { passed++; console.log(`ok - ${m}`); };

// RFC 6238 TOTP, written here independently of the server's implementation.
function base32(s) {
  const A = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, acc = 0; const out = [];
  for (const c of s.replace(/=+$/, "").toUpperCase()) {
    acc = (acc << 5) | A.indexOf(c); bits += 5;
    if (bits >= 8) { bits -= 8; out.push((acc >>> bits) & 0xff); }
  }
  return Buffer.from(out);
}
function totp(secret, t = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(t / 1000 / 30)));
  const h = crypto.createHmac("sha1", base32(secret)).update(counter).digest();
  const o = h[19] & 0x0f;
  const v = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
  return String(v % 1000000).padStart(6, "0");
}

let current = null; // the page in use, for the failure screenshot
let savedId = null; // cora's saved search, which another user must not see

async function login(browser, name) {
  const u = cfg.users[name];
  const context = await browser.newContext({ ignoreHTTPSErrors: true, acceptDownloads: true });
  const page = await context.newPage();
  current = page;
  const r = await page.goto(`${base}/login`);
  assert.equal(r.status(), 200);
  await page.fill("#username", name);
  await page.fill("#password", u.password);
  await page.click("#login");
  await page.waitForURL(`${base}/login/mfa`);
  await page.fill("#code", totp(u.totp_secret));
  await page.click("#verify");
  await page.waitForURL((url) => !url.pathname.startsWith("/login"));
  return { context, page };
}

async function csrfOf(page) {
  return page.evaluate(() => document.querySelector('meta[name="csrf-token"]').content);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage"],
  });
  try {
    // --- Compliance officer: password + TOTP.
    const { context, page } = await login(browser, "cora");
    assert.equal(new URL(page.url()).pathname, "/search");
    ok("compliance officer signs in with password + TOTP");
    const cookies = await context.cookies();
    const sc = cookies.find((c) => c.name === "__Host-branchrec_session");
    assert.ok(sc, JSON.stringify(cookies));
    assert.equal(sc.secure, true);
    assert.equal(sc.httpOnly, true);
    assert.equal(sc.sameSite, "Strict");
    assert.equal(sc.path, "/");
    ok("session cookie is __Host-, Secure, HttpOnly, SameSite=Strict");

    // CSP and the other headers on a page.
    const resp = await page.goto(`${base}/search`);
    const h = resp.headers();
    const csp = h["content-security-policy"] || "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.equal(h["x-content-type-options"], "nosniff");
    assert.equal(h["cache-control"], "no-store");
    ok(`strict CSP: ${csp}`);

    // --- Search by participant.
    await page.fill("#participant", cfg.participant);
    await page.click("#search");
    await page.waitForSelector("#results");
    const ids = await page.$$eval("#results tbody tr", (rs) => rs.map((r) => r.dataset.recording));
    assert.deepEqual(ids, [cfg.london_id]);
    assert.ok(!page.url().includes("4420"), `number in the URL: ${page.url()}`);
    await page.screenshot({ path: shot("search.png"), fullPage: true });
    ok("search by participant finds exactly the london call; no number in the URL");

    // CSV of the result list.
    const [csvDl] = await Promise.all([page.waitForEvent("download"), page.click("#csv")]);
    const csvText = fs.readFileSync(await csvDl.path(), "utf8");
    assert.match(csvText, /^recording_id,start,/);
    assert.ok(csvText.includes(cfg.london_id) && !csvText.includes(cfg.paris_id), csvText);
    ok("CSV export of the results");

    // --- Search filters: duration and state (form), bad values refused by the API.
    const csrf0 = await csrfOf(page);
    const api = async (data) => {
      const r = await context.request.post(`${base}/api/v1/search`, { data, headers: { "X-CSRF-Token": csrf0 } });
      return { status: r.status(), body: r.status() === 200 ? await r.json() : await r.text() };
    };
    const lon = (await api({ participant: cfg.participant })).body.hits[0];
    assert.equal(lon.recording_id, cfg.london_id);
    const durS = lon.duration_ms / 1000;
    assert.ok(durS > 1, JSON.stringify(lon));
    const formSearch = async (fields) => {
      await page.goto(`${base}/search`);
      for (const [k, v] of Object.entries(fields)) {
        const el = await page.$(`[name="${k}"]`);
        if ((await el.evaluate((e) => e.tagName)) === "SELECT") await page.selectOption(`[name="${k}"]`, v);
        else await page.fill(`[name="${k}"]`, v);
      }
      await page.click("#search");
      await page.waitForSelector("#results");
      return page.$$eval("#results tbody tr", (rs) => rs.map((r) => r.dataset.recording));
    };
    assert.deepEqual(await formSearch({ participant: cfg.participant, min_duration_s: String(durS - 0.5), max_duration_s: String(durS + 0.5) }), [cfg.london_id]);
    assert.deepEqual(await formSearch({ participant: cfg.participant, min_duration_s: String(durS + 0.5) }), []);
    assert.deepEqual(await formSearch({ participant: cfg.participant, max_duration_s: String(durS - 0.5) }), []);
    assert.deepEqual(await formSearch({ participant: cfg.participant, state: "complete" }), [cfg.london_id]);
    assert.deepEqual(await formSearch({ participant: cfg.participant, state: "interrupted" }), []);
    assert.equal((await api({ state: "bogus" })).status, 400);
    assert.equal((await api({ min_duration_s: "-3" })).status, 400);
    assert.equal((await api({ sort: "password" })).status, 400);
    ok(`duration (${durS} s ± 0.5) and state filters select exactly the london call; bad state/duration/sort are 400`);

    // --- Column sorting and paging (london and paris are indexed; the backlogged leeds
    // call may arrive meanwhile, so only their relative order is compared).
    const siteRows = () => page.$$eval("#results tbody tr", (rs) => rs.map((r) => ({ id: r.dataset.recording, site: r.children[4].textContent })));
    const two = (rs) => rs.map((r) => r.id).filter((id) => id === cfg.london_id || id === cfg.paris_id);
    await formSearch({});
    await page.click("#sort-site");
    await page.waitForSelector("#results th[aria-sort=ascending] #sort-site");
    let rows = await siteRows();
    const sites = rows.map((r) => r.site);
    assert.deepEqual(sites, [...sites].sort(), JSON.stringify(rows));
    assert.deepEqual(two(rows), [cfg.london_id, cfg.paris_id], JSON.stringify(rows));
    await page.click("#sort-site");
    await page.waitForSelector("#results th[aria-sort=descending] #sort-site");
    rows = await siteRows();
    assert.deepEqual(rows.map((r) => r.site), [...sites].sort().reverse(), JSON.stringify(rows));
    assert.deepEqual(two(rows), [cfg.paris_id, cfg.london_id], JSON.stringify(rows));
    // The API agrees.
    assert.deepEqual(two((await api({ sort: "-site" })).body.hits.map((h) => ({ id: h.recording_id }))), [cfg.paris_id, cfg.london_id]);
    assert.deepEqual(two((await api({ sort: "site" })).body.hits.map((h) => ({ id: h.recording_id }))), [cfg.london_id, cfg.paris_id]);
    // One per page, by site ascending: page 1, Next, Previous — each page is the API's
    // page of the same search.
    const apiPage = async (offset) => (await api({ sort: "site", limit: 1, offset })).body.hits.map((h) => h.recording_id);
    await formSearch({ limit: "1" });
    await page.click("#sort-site");
    await page.waitForSelector("#results th[aria-sort=ascending]");
    const p1 = (await siteRows()).map((r) => r.id);
    assert.equal(p1.length, 1);
    assert.deepEqual(p1, await apiPage(0));
    assert.equal(await page.textContent("#page-no"), "Page 1");
    assert.equal(await page.$("#prev"), null);
    await page.click("#next");
    await page.waitForSelector("#page-no:text('Page 2')");
    const p2 = (await siteRows()).map((r) => r.id);
    assert.equal(p2.length, 1);
    assert.notDeepEqual(p2, p1);
    assert.deepEqual(p2, await apiPage(1));
    await page.click("#prev");
    await page.waitForSelector("#page-no:text('Page 1')");
    assert.deepEqual((await siteRows()).map((r) => r.id), p1);
    ok(`column sorting (site ascending/descending, API the same) and paging with one per page: ${sites}`);

    // --- Saved searches: save from the page, list and run by API and page, delete.
    await formSearch({ participant: cfg.participant, state: "complete" });
    await page.fill("#saved-name", "london calls");
    await page.click("#save-search");
    await page.waitForSelector("#saved-list li");
    assert.equal(await page.textContent("#saved-list li .name"), "london calls");
    const savedList = await (await context.request.get(`${base}/api/v1/saved-searches`)).json();
    assert.equal(savedList.saved_searches.length, 1, JSON.stringify(savedList));
    savedId = savedList.saved_searches[0].id;
    assert.equal(savedList.saved_searches[0].search.participant, cfg.participant);
    const apiCreated = await context.request.post(`${base}/api/v1/saved-searches`, { data: { name: "paris by API", search: { site: "paris" } }, headers: { "X-CSRF-Token": csrf0 } });
    assert.equal(apiCreated.status(), 201);
    const parisSaved = (await apiCreated.json()).id;
    const ranParis = await (await context.request.post(`${base}/api/v1/saved-searches/${parisSaved}/run`, { data: {}, headers: { "X-CSRF-Token": csrf0 } })).json();
    assert.deepEqual(ranParis.hits.map((h) => h.recording_id), [cfg.paris_id]);
    const noCsrfSave = await context.request.post(`${base}/api/v1/saved-searches`, { data: { name: "x", search: {} } });
    assert.equal(noCsrfSave.status(), 403);
    await page.goto(`${base}/search`);
    assert.equal((await page.$$("#saved-list li")).length, 2);
    await page.click(`#saved-list li[data-saved="${savedId}"] .run-saved`);
    await page.waitForSelector("#results");
    assert.deepEqual(await page.$$eval("#results tbody tr", (rs) => rs.map((r) => r.dataset.recording)), [cfg.london_id]);
    assert.equal(await page.inputValue("#participant"), cfg.participant);
    await page.click(`#saved-list li[data-saved="${parisSaved}"] .delete-saved`);
    await page.waitForSelector("#saved-searches");
    assert.equal((await page.$$("#saved-list li")).length, 1);
    const del = await context.request.delete(`${base}/api/v1/saved-searches/${parisSaved}`, { headers: { "X-CSRF-Token": csrf0 } });
    assert.equal(del.status(), 404);
    ok("saved searches: saved from the page, listed and run by API and page, deleted by page (gone: API 404)");
    await formSearch({ participant: cfg.participant });

    // --- Recording page and player.
    await page.click(`#results a[href="/recordings/${cfg.london_id}"]`);
    await page.waitForURL(`${base}/recordings/${cfg.london_id}`);
    const parts = await page.$$eval("#participants tbody tr", (rs) => rs.map((r) => r.textContent));
    assert.equal(parts.length, 2, parts.join("|"));
    assert.ok(parts.some((p) => p.includes("Alice Ashworth")), parts.join("|"));
    assert.match(await page.textContent("#integrity"), /ok/);
    // The reason is required for the compliance role.
    await page.click("#open-player");
    await page.waitForSelector("#player-error:not([hidden])");
    await page.fill("#reason", "case 15: listening");
    await page.click("#open-player");
    await page.waitForSelector('canvas.wave[data-lane="1"][data-drawn]');
    const lanes = await page.$$eval("canvas.wave", (cs) =>
      cs.map((c) => {
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let lit = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) lit++;
        return { lane: c.dataset.lane, peaks: Number(c.dataset.drawn), lit };
      }));
    assert.equal(lanes.length, 2, JSON.stringify(lanes));
    for (const l of lanes) assert.ok(l.peaks > 100 && l.lit > 1000, JSON.stringify(lanes));
    ok(`two waveform lanes drawn from server-side peaks ${JSON.stringify(lanes)}`);

    // Web Audio probe on the audio element: one analyser per channel.
    await page.evaluate(() => {
      const audio = document.getElementById("audio");
      const ac = new AudioContext();
      const src = ac.createMediaElementSource(audio);
      const split = ac.createChannelSplitter(2);
      const an = [ac.createAnalyser(), ac.createAnalyser()];
      src.connect(split);
      split.connect(an[0], 0);
      split.connect(an[1], 1);
      src.connect(ac.destination);
      window.__probe = { ac, an, max: [0, 0], samples: 0 };
      const buf = new Float32Array(2048);
      window.__probe.timer = setInterval(() => {
        for (let c = 0; c < 2; c++) {
          an[c].getFloatTimeDomainData(buf);
          for (const v of buf) window.__probe.max[c] = Math.max(window.__probe.max[c], Math.abs(v));
        }
        window.__probe.samples++;
      }, 20);
    });
    const tPlay = Date.now();
    await page.click("#play");
    await page.evaluate(() => window.__probe.ac.resume());
    await page.waitForFunction(() => document.getElementById("audio").currentTime > 0, null, { timeout: 15000 });
    const firstAudioMs = Date.now() - tPlay;
    await page.waitForFunction(() => document.getElementById("audio").currentTime > 1.2, null, { timeout: 15000 });
    await page.screenshot({ path: shot("recording.png"), fullPage: true });
    const probe = await page.evaluate(() => ({
      t: document.getElementById("audio").currentTime,
      max: window.__probe.max,
      samples: window.__probe.samples,
      state: window.__probe.ac.state,
      head: document.getElementById("playhead").style.left,
      button: document.getElementById("play").textContent,
    }));
    assert.ok(probe.max[0] > 0.05 && probe.max[1] > 0.05, JSON.stringify(probe));
    assert.notEqual(probe.head, "0%");
    assert.equal(probe.button, "Pause");
    ok(`playing: currentTime ${probe.t.toFixed(2)} s, Web Audio peaks ${probe.max.map((m) => m.toFixed(3))} on both channels, first audio after ${firstAudioMs} ms`);
    // Pause, seek.
    await page.click("#play");
    await page.evaluate(() => {
      const s = document.getElementById("seek");
      s.value = "200";
      s.dispatchEvent(new Event("input"));
    });
    const afterSeek = await page.evaluate(() => document.getElementById("audio").currentTime);
    const dur = await page.evaluate(() => document.getElementById("audio").duration);
    assert.ok(Math.abs(afterSeek - dur * 0.2) < 0.2, `${afterSeek} of ${dur}`);
    ok(`pause and seek (to ${afterSeek.toFixed(2)} of ${dur.toFixed(2)} s)`);

    // HTTP Range on the stream, from the page's session.
    const range = await page.evaluate(async () => {
      const src = document.getElementById("audio").src;
      const r = await fetch(src, { headers: { Range: "bytes=0-99" } });
      const b = new Uint8Array(await r.arrayBuffer());
      return { status: r.status, cr: r.headers.get("content-range"), len: b.length, riff: String.fromCharCode(...b.slice(0, 4)), cc: r.headers.get("cache-control") };
    });
    assert.equal(range.status, 206);
    assert.match(range.cr, /^bytes 0-99\/\d+$/);
    assert.equal(range.len, 100);
    assert.equal(range.riff, "RIFF");
    assert.match(range.cc, /no-store/);
    ok(`Range request: ${range.status} ${range.cr}`);

    // Download with a reason; the Rust side compares it with the box's export.
    await page.fill("#reason", "case 15: evidence for the regulator");
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
    await dl.saveAs(shot("download.wav"));
    ok(`WAV downloaded (${fs.statSync(shot("download.wav")).size} bytes)`);
    // Ogg Opus through the same reason prompt (the Rust side probes it with ffprobe).
    await page.fill("#reason", "");
    await page.click("#download-opus");
    await page.waitForSelector("#player-error:not([hidden])");
    await page.fill("#reason", "case 15: opus for the regulator");
    const [dlOpus] = await Promise.all([page.waitForEvent("download"), page.click("#download-opus")]);
    assert.equal(dlOpus.suggestedFilename(), `${cfg.london_id}.opus`);
    await dlOpus.saveAs(shot("download.opus"));
    const opusBytes = fs.readFileSync(shot("download.opus"));
    assert.equal(opusBytes.subarray(0, 4).toString("latin1"), "OggS");
    assert.ok(opusBytes.includes(Buffer.from("OpusHead")), "no OpusHead");
    // A download grant is for one format and one GET; play grants have no format.
    const csrfP = await csrfOf(page);
    const og = await context.request.post(`${base}/api/v1/recordings/${cfg.london_id}/grants`, { data: { purpose: "download", reason: "x", format: "opus" }, headers: { "X-CSRF-Token": csrfP } });
    assert.equal(og.status(), 201);
    const ogj = await og.json();
    assert.match(ogj.url, /\/opus\?grant=/);
    assert.equal((await context.request.get(`${base}/api/v1/recordings/${cfg.london_id}/wav?grant=${ogj.grant}`)).status(), 403);
    const once = await context.request.get(`${base}${ogj.url}`);
    assert.equal(once.status(), 403, "the WAV attempt used the grant up");
    const bad = await context.request.post(`${base}/api/v1/recordings/${cfg.london_id}/grants`, { data: { purpose: "play", reason: "x", format: "opus" }, headers: { "X-CSRF-Token": csrfP } });
    assert.equal(bad.status(), 400);
    ok(`Ogg Opus downloaded with a reason (${opusBytes.length} bytes); a grant serves one format, once`);
    // The evidence bundle (tar); the Rust side unpacks it and runs docs/evidence.md's checks.
    await page.fill("#reason", "case 15: evidence bundle");
    const [dlEv] = await Promise.all([page.waitForEvent("download"), page.click("#download-evidence")]);
    assert.equal(dlEv.suggestedFilename(), `${cfg.london_id}.tar`);
    await dlEv.saveAs(shot("evidence.tar"));
    const evBytes = fs.readFileSync(shot("evidence.tar"));
    assert.equal(evBytes.subarray(257, 262).toString("latin1"), "ustar");
    assert.equal(evBytes.subarray(0, 37).toString("latin1"), `${cfg.london_id}/`);
    ok(`evidence bundle downloaded with a reason (${evBytes.length} bytes, ustar)`);

    // --- CSRF: state changes without the token are refused, page form and API alike.
    const noToken = await context.request.post(`${base}/search`, { form: { participant: "+44*" } });
    assert.equal(noToken.status(), 403);
    const apiNoToken = await context.request.post(`${base}/api/v1/search`, { data: { participant: "+44*" } });
    assert.equal(apiNoToken.status(), 403);
    const wrongToken = await context.request.post(`${base}/api/v1/search`, { data: { participant: "+44*" }, headers: { "X-CSRF-Token": "x".repeat(43) } });
    assert.equal(wrongToken.status(), 403);
    const withToken = await context.request.post(`${base}/api/v1/search`, { data: { participant: "+44*" }, headers: { "X-CSRF-Token": await csrfOf(page) } });
    assert.equal(withToken.status(), 200);
    assert.deepEqual((await withToken.json()).hits.map((x) => x.recording_id), [cfg.london_id]);
    ok("CSRF token required on every state change (form 403, API 403, wrong token 403, right token 200)");
    // Signed out, the API answers 401 and pages go to the sign-in form.
    const anon = await browser.newContext({ ignoreHTTPSErrors: true });
    const anonApi = await anon.request.get(`${base}/api/v1/recordings/${cfg.london_id}`);
    assert.equal(anonApi.status(), 401);
    const anonPage = await anon.newPage();
    await anonPage.goto(`${base}/recordings/${cfg.london_id}`);
    assert.equal(new URL(anonPage.url()).pathname, "/login");
    await anon.close();
    ok("no session: API 401, pages redirect to sign-in");

    // --- A case, a legal hold through Object Lock and the box, a release request.
    await page.goto(`${base}/cases`);
    await page.fill("#case-id", "FCA-2026-015");
    await page.fill("#case-title", "Regulator request 15");
    await page.click("#create-case");
    await page.waitForURL(`${base}/cases/FCA-2026-015`);
    // Add the london call from a search result: tick it, pick the case.
    await page.goto(`${base}/search`);
    await page.fill("#participant", cfg.participant);
    await page.click("#search");
    await page.waitForSelector("#add-to-case");
    await page.check(`#results tr[data-recording="${cfg.london_id}"] input.pick`);
    await page.selectOption("#case-pick", "FCA-2026-015");
    await page.click("#add-to-case-btn");
    await page.waitForURL(`${base}/cases/FCA-2026-015`);
    await page.waitForSelector(`#case-recordings tr[data-recording="${cfg.london_id}"]`);
    assert.equal((await page.$$("#case-recordings tbody tr")).length, 1);
    const noPick = await context.request.post(`${base}/cases/add-from-search`, { form: { csrf: await csrfOf(page), case: "FCA-2026-015" } });
    assert.equal(noPick.status(), 400);
    ok("recording added to the case from a search result (ticked, case picked)");
    await page.fill("#hold-reason", "case 15: regulator request");
    await page.click("#place-hold");
    await page.waitForSelector("#case-note");
    assert.equal(await page.getAttribute(`#case-recordings tr[data-recording="${cfg.london_id}"]`, "data-lock"), "on");
    ok(`legal hold placed: ${(await page.textContent("#case-note")).trim()}`);
    // The box polls its commands every second: wait for its acknowledgement.
    let acked = false;
    for (let i = 0; i < 60 && !acked; i++) {
      await page.goto(`${base}/cases/FCA-2026-015`);
      acked = (await page.getAttribute('#hold-boxes li[data-box="box-lon"]', "data-acknowledged")) === "true";
      if (!acked) await page.waitForTimeout(1000);
    }
    assert.ok(acked, await page.textContent("#hold-boxes"));
    await page.screenshot({ path: shot("case.png"), fullPage: true });
    ok("box-lon applied the hold and acknowledged it");
    await page.fill("#release-reason", "case closed");
    await page.click("#request-release");
    await page.waitForSelector('#releases li[data-approved="false"]');
    const selfApprove = await Promise.all([
      page.waitForResponse((x) => x.url().includes("/approve")),
      page.click("#releases button.approve"),
    ]);
    assert.equal(selfApprove[0].status(), 403);
    assert.match(await page.textContent("main"), /two-person rule/);
    ok("the requester cannot approve their own release (403, two-person rule)");
    await context.close();

    // --- A second compliance officer approves: Object Lock OFF, release command sent.
    {
      const { context: c, page: p } = await login(browser, "cliff");
      await p.goto(`${base}/cases/FCA-2026-015`);
      await p.click("#releases button.approve");
      await p.waitForSelector("#case-note");
      assert.match(await p.textContent("#case-note"), /Release approved/);
      assert.equal(await p.getAttribute(`#case-recordings tr[data-recording="${cfg.london_id}"]`, "data-lock"), "off");
      assert.match(await p.textContent("#releases"), /approved by web:cliff/);
      await c.close();
      ok("a second user approved the release: Object Lock legal hold OFF");
    }

    // --- Supervisor of london: paris is refused, page and API.
    {
      const { context: c, page: p } = await login(browser, "sam");
      const r = await p.goto(`${base}/recordings/${cfg.paris_id}`);
      assert.equal(r.status(), 403);
      assert.match(await p.textContent("main"), /outside your assigned sites/);
      const api = await c.request.get(`${base}/api/v1/recordings/${cfg.paris_id}`);
      assert.equal(api.status(), 403);
      const g = await c.request.post(`${base}/api/v1/recordings/${cfg.paris_id}/grants`, { data: { purpose: "play", reason: "x" }, headers: { "X-CSRF-Token": await csrfOf(p) } });
      assert.equal(g.status(), 403);
      await p.goto(`${base}/search`);
      const all = await c.request.post(`${base}/api/v1/search`, { data: {}, headers: { "X-CSRF-Token": await csrfOf(p) } });
      assert.deepEqual((await all.json()).hits.map((x) => x.recording_id), [cfg.london_id]);
      const own = await p.goto(`${base}/recordings/${cfg.london_id}`);
      assert.equal(own.status(), 200);
      assert.ok(await p.$("#open-player"));
      assert.equal(await p.$("#download"), null);
      await c.close();
      ok("supervisor: other site refused (page 403, API 403, grant 403), searches see only london, may play own site, no download");
    }

    // --- IT: fleet, no recordings.
    {
      const { context: c, page: p } = await login(browser, "ivy");
      assert.equal(new URL(p.url()).pathname, "/fleet");
      // The indexer follows the archive every 2 s and the boxes push their status every
      // 5 s; on a loaded machine a pass can lag: reload (every 2 s, 60 s at most) until
      // the healthy box's status is fresh.
      let rows = [];
      for (let i = 0; i < 30; i++) {
        if (i > 0) { await p.waitForTimeout(2000); await p.goto(`${base}/fleet`); }
        rows = await p.$$eval("#fleet tbody tr", (rs) => rs.map((r) => ({ box: r.dataset.box, cls: r.className, problems: r.dataset.problems, bg: getComputedStyle(r).backgroundColor })));
        const fresh = rows.find((r) => r.box === cfg.fresh_box);
        const bkl = rows.find((r) => r.box === cfg.backlog_box);
        if (fresh && fresh.problems === "" && bkl && /backlog/.test(bkl.problems)) break;
      }
      const js = JSON.stringify(rows);
      assert.equal(rows.length, 3, js);
      // Problem boxes first (by id), in the alarm colour; the healthy one last.
      assert.equal(rows[0].box, cfg.backlog_box, js);
      assert.match(rows[0].problems, /backlog/, js);
      assert.equal(rows[1].box, cfg.stale_box, js);
      assert.match(rows[1].problems, /stale/, js);
      for (const r of rows.slice(0, 2)) {
        assert.equal(r.cls, "alarm", js);
        assert.equal(r.bg, "rgb(253, 231, 229)", js);
      }
      assert.equal(rows[2].box, cfg.fresh_box, js);
      assert.equal(rows[2].problems, "", js);
      await p.screenshot({ path: shot("fleet.png"), fullPage: true });
      const s = await p.goto(`${base}/search`);
      assert.equal(s.status(), 403);
      const api = await c.request.get(`${base}/api/v1/recordings/${cfg.london_id}`);
      assert.equal(api.status(), 403);
      const fleet = await c.request.get(`${base}/api/v1/fleet`);
      assert.equal(fleet.status(), 200);
      await c.close();
      ok(`IT: fleet with the backlogged and the stale box first in the alarm colour ${JSON.stringify(rows)}; recordings refused`);
    }

    // --- Lockout: five wrong passwords lock the account; the right one is then refused.
    {
      const c = await browser.newContext({ ignoreHTTPSErrors: true });
      const p = await c.newPage();
      current = p;
      const statuses = [];
      for (let i = 0; i < 5; i++) {
        await p.goto(`${base}/login`);
        await p.fill("#username", "lockme");
        await p.fill("#password", `wrong password ${i}`);
        const [r] = await Promise.all([p.waitForResponse((x) => x.url().endsWith("/login") && x.request().method() === "POST"), p.click("#login")]);
        statuses.push(r.status());
      }
      assert.deepEqual(statuses, [401, 401, 401, 401, 401]);
      await p.goto(`${base}/login`);
      await p.fill("#username", "lockme");
      await p.fill("#password", cfg.users.lockme.password);
      const [r] = await Promise.all([p.waitForResponse((x) => x.url().endsWith("/login") && x.request().method() === "POST"), p.click("#login")]);
      assert.equal(r.status(), 429);
      assert.match(await p.textContent("main"), /locked/);
      await c.close();
      ok("login rate limit: 5 failures lock the account (429 even with the right password)");
    }

    // --- Auditor: metadata yes, audio no; the audit page lists the actions and verifies.
    {
      const { context: c, page: p } = await login(browser, "audrey");
      const r = await p.goto(`${base}/recordings/${cfg.london_id}`);
      assert.equal(r.status(), 200);
      assert.ok(await p.$("#no-audio"));
      assert.equal(await p.$("#open-player"), null);
      const g = await c.request.post(`${base}/api/v1/recordings/${cfg.london_id}/grants`, { data: { purpose: "play", reason: "curious" }, headers: { "X-CSRF-Token": await csrfOf(p) } });
      assert.equal(g.status(), 403);
      ok("auditor sees metadata but cannot play (no player; grant API 403)");
      const theirs = await (await c.request.get(`${base}/api/v1/saved-searches`)).json();
      assert.deepEqual(theirs.saved_searches, []);
      const runOther = await c.request.post(`${base}/api/v1/saved-searches/${savedId}/run`, { data: {}, headers: { "X-CSRF-Token": await csrfOf(p) } });
      assert.equal(runOther.status(), 404);
      const delOther = await c.request.delete(`${base}/api/v1/saved-searches/${savedId}`, { headers: { "X-CSRF-Token": await csrfOf(p) } });
      assert.equal(delOther.status(), 404);
      ok("another user's saved search: not listed, not run, not deleted (404)");
      await p.goto(`${base}/audit`);
      const actions = await p.$$eval("#audit tbody tr", (rs) => rs.map((r) => r.dataset.action));
      for (const a of ["login", "search", "search_export", "show", "play", "download", "refused", "login_failed", "login_refused", "case_create", "case_add", "hold", "release_request", "release_approve", "saved_search_create", "saved_search_delete"]) {
        assert.ok(actions.includes(a), `${a} missing in ${actions}`);
      }
      // Filter by action.
      await p.fill('input[name="action"]', "play");
      await p.click("#audit-filter");
      await p.waitForSelector("#audit");
      const only = await p.$$eval("#audit tbody tr", (rs) => rs.map((r) => r.dataset.action));
      assert.ok(only.length >= 1 && only.every((a) => a === "play"), only.join(","));
      assert.match(await p.textContent("#audit"), /case 15: listening/);
      await p.click("#verify-chain");
      await p.waitForSelector("#verify-result");
      const v = await p.textContent("#verify-result");
      assert.match(v, /verifies: \d+ entries/);
      await p.screenshot({ path: shot("audit.png"), fullPage: true });
      await c.close();
      ok(`audit page lists every action, filters, and ${v.trim()}`);
    }

    // --- OpenID Connect: authorization code + PKCE against the provider on loopback.
    {
      const c = await browser.newContext({ ignoreHTTPSErrors: true });
      const p = await c.newPage();
      current = p;
      await p.goto(`${base}/login`);
      await Promise.all([p.waitForNavigation(), p.click("#sso")]);
      const idpUrl = new URL(p.url());
      assert.equal(idpUrl.port, String(cfg.oidc_port), p.url());
      // The provider's own login and consent pages (its development interactions).
      for (let i = 0; i < 4 && !p.url().startsWith(base); i++) {
        if (await p.$('input[name="login"]')) {
          await p.fill('input[name="login"]', "olga");
          await p.fill('input[name="password"]', "provider password");
        }
        await Promise.all([p.waitForNavigation(), p.click('button[type="submit"]')]);
      }
      await p.waitForURL(`${base}/search`, { timeout: 15000 });
      assert.match(await p.textContent(".who"), /olga \(compliance\)/);
      const ck = (await c.cookies()).find((x) => x.name === "__Host-branchrec_session");
      assert.ok(ck && ck.secure && ck.httpOnly && ck.sameSite === "Strict");
      const me = await c.request.get(`${base}/api/v1/me`);
      assert.equal((await me.json()).username, "olga");
      await c.close();
      ok("OpenID Connect sign-in (authorization code + PKCE, RS256 ID token) through the provider on loopback");
    }

    // /metrics of the central service.
    {
      const c = await browser.newContext({ ignoreHTTPSErrors: true });
      const m = await c.request.get(`${base}/metrics`);
      assert.equal(m.status(), 200);
      const t = await m.text();
      const line = t.split("\n").find((l) => l.startsWith("branchrec_central_web_logins_total"));
      assert.ok(line && Number(line.split(" ")[1]) >= 4, t);
      console.log(`metrics: ${t.split("\n").filter((l) => !l.startsWith("#")).join(" | ")}`);
      await c.close();
      ok("Prometheus /metrics");
    }
  } catch (e) {
    if (current) {
      try {
        fs.writeFileSync(shot("failure.html"), await current.content());
        await current.screenshot({ path: shot("failure.png"), fullPage: true });
        console.error(`failure page: ${current.url()} (failure.html, failure.png in ${cfg.artifacts})`);
      } catch (_) { /* closed already */ }
    }
    throw e;
  } finally {
    await browser.close();
  }
  console.log(`${passed} passed, 0 failed`);
}

main().catch((e) => {
  console.error(`not ok - ${e.stack || e}`);
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
});
