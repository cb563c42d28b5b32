// The front desk in Chromium: a desk user signs in with a password, checks camera and
// microphone on the pre-join screen, and opens the console; a door station (`callbox device`,
// intercom mode, simulated buttons) rings the desk with its call button; the page rings
// (banner, early video), Enter answers, both sides decode each other, Open door opens that
// door only and the page shows the confirmation; a frozen server shows the reconnect banner
// and frozen tiles, and the call carries on after it; Hang up leaves the door idle and the
// call in the history with its snapshot. Run inside a network namespace with only `lo`.
//
//   node desk.mjs <callbox> <artifacts> <server.toml> <door.toml> <door.sock> <gate.toml> <gate.sock> <password>
//
// Prints one JSON line of figures and exits 0, or prints why and exits 1.

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fail, launchChromium, until } from "./lib.mjs";

const [bin, artifacts, serverCfg, doorCfg, doorSock, gateCfg, gateSock, password] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const children = [];
const env = { ...process.env, RUST_LOG: process.env.CHILD_LOG || "warn" };

function status(sock) {
  try { return JSON.parse(execFileSync(bin, ["status", "--json", "--socket", sock], { env }).toString()); } catch { return null; }
}
function press(sock, button) { execFileSync(bin, ["gpio", "press", button, "--socket", sock], { env }); }
function playing(s, stream) {
  const p = s && (s.playing || []).find((p) => p.stream_id === stream);
  return p ? p.frames_decoded : 0;
}
function device(cfg, addr) {
  writeFileSync(cfg, readFileSync(cfg, "utf8").replace("ws://SERVER", `ws://${addr}`));
  const p = spawn(bin, ["device", "--config", cfg], { stdio: ["ignore", "ignore", "inherit"], env: { ...env, NOTIFY_SOCKET: "" } });
  children.push(p);
  return p;
}
async function frames(page, stream) {
  const el = page.locator(`.tile[data-stream-id="${stream}"] [data-testid="frames-decoded"]`);
  return (await el.count()) ? Number(await el.first().textContent()) : 0;
}

const figures = {};
let browser, page;
try {
  const server = spawn(bin, ["server", "--config", serverCfg, "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"], env });
  children.push(server);
  const addr = await new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).once("line", (line) => {
      const m = line.match(/http:\/\/(\S+)/);
      m ? resolve(m[1]) : reject(new Error("server did not start: " + line));
    });
  });
  device(doorCfg, addr);
  device(gateCfg, addr);
  await until("both doors in the room", () => [doorSock, gateSock].every((s) => (status(s) || {}).room?.state === "Connected"));

  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(["camera", "microphone", "notifications"], { origin: `http://${addr}` });
  page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(`http://${addr}/`);

  // Sign-in: a desk account; no developer fields on a server that is not in dev mode.
  await until("the sign-in form", () => page.locator("#desk-form").isVisible());
  if (await page.locator("#dev").isVisible()) fail("developer fields shown to a desk user");
  await page.fill("#desk-user", "desk");
  await page.fill("#desk-password", "wrong password");
  await page.getByTestId("sign-in").click();
  await until("the wrong password refused", () => page.locator("#signin-problem").isVisible());
  await page.fill("#desk-password", password);
  await page.getByTestId("sign-in").click();

  // Pre-join: the camera preview plays, devices are listed.
  await until("the pre-join screen", () => page.getByTestId("prejoin").isVisible());
  await until("the camera preview playing", () => page.evaluate(() => document.getElementById("preview").videoWidth > 0));
  const cams = await page.locator("#cam-select option").count();
  if (cams < 1) fail("no camera listed");
  await page.screenshot({ path: join(artifacts, "desk-prejoin.png") });
  await page.getByTestId("enter").click();
  await until("Connected", async () => (await page.getByTestId("room-state").getAttribute("data-state")) === "Connected");
  await until("both doors listed online", async () => (await page.locator('.door[data-online="true"]').count()) === 2);

  // The tab is in the background (as far as the page can tell) and notifications are
  // allowed: the ring must raise one. The Notification constructor is wrapped to see it.
  await page.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    const Real = window.Notification;
    window.__notified = [];
    window.Notification = class extends Real { constructor(title, opts) { super(title, opts); window.__notified.push(title); } };
    Object.defineProperty(window.Notification, "permission", { get: () => Real.permission });
  });

  // The door's button rings the desk.
  const t0 = Date.now();
  press(doorSock, "call");
  await until("the page rings", () => page.getByTestId("incoming").isVisible());
  figures.press_to_ring_ms = Date.now() - t0;
  const title = await page.locator("#incoming-title").textContent();
  const notified = await page.evaluate(() => window.__notified);
  if (!(notified.length === 1 && notified[0].includes("Door station"))) fail(`background notification: ${JSON.stringify(notified)}`);
  await page.evaluate(() => { delete document.hidden; });
  if (!title.includes("Door station")) fail(`incoming says ${title}`);
  if (!(await page.getByTestId("answer").evaluate((b) => b === document.activeElement))) fail("Answer does not have the focus");
  await until("early video of the door while ringing", () => page.evaluate(() => document.getElementById("early").videoWidth > 0), 15000);
  if (await page.locator('.tile[data-stream-id="door-main"]').isVisible()) fail("a call tile shown while it only rings");
  await page.waitForTimeout(500);
  await page.screenshot({ path: join(artifacts, "desk-incoming.png") });
  if ((status(doorSock) || {}).call !== "ringing_out") fail("the door is not ringing out");

  // Enter answers; both decode each other.
  const t1 = Date.now();
  await page.keyboard.press("Enter");
  await until("the page decodes the door", async () => (await frames(page, "door-main")) > 30);
  await until("the door decodes the desk", () => playing(status(doorSock), "desk-main") > 5);
  figures.answer_to_both_ms = Date.now() - t1;
  const codec = await page.locator('.tile[data-stream-id="door-main"]').getAttribute("data-codec");
  if (codec !== "video/H264") fail(`negotiated ${codec}`);
  if ((await page.getByTestId("call-state").textContent()) !== "In a call with Door station") fail("call bar: " + await page.getByTestId("call-state").textContent());
  if (!(await page.getByTestId("self-view").isVisible())) fail("no self-view");
  await page.waitForTimeout(1000);
  await page.screenshot({ path: join(artifacts, "desk-call.png") });

  // Open door: that door pulses and confirms; the other does not.
  await page.getByTestId("call-open-door").click();
  await until("the confirmation", async () => (await page.getByTestId("toast").getAttribute("data-result")) === "opened");
  const toastText = await page.getByTestId("toast").textContent();
  await until("the door's relay pulsed", () => (status(doorSock) || {}).door_pulses === 1);
  if ((status(gateSock) || {}).door_pulses !== 0) fail("the other door opened too");
  figures.door_toast = toastText;

  // The server freezes for 9 s: the page says it is reconnecting, the tile says so, and the
  // call goes on afterwards.
  server.kill("SIGSTOP");
  await until("the reconnect banner", () => page.getByTestId("reconnect-banner").isVisible(), 20000);
  const frozen = page.locator('.tile[data-stream-id="door-main"] [data-testid="tile-frozen"]');
  await until("the tile says reconnecting", async () => (await frozen.isVisible()) && (await frozen.textContent()) === "Reconnecting…", 10000);
  await page.screenshot({ path: join(artifacts, "desk-reconnect.png") });
  server.kill("SIGCONT");
  const t2 = Date.now();
  await until("Connected again", async () => (await page.getByTestId("room-state").getAttribute("data-state")) === "Connected");
  const before = await frames(page, "door-main");
  await until("the door's video again", async () => (await frames(page, "door-main")) > before + 30);
  figures.back_after_stall_ms = Date.now() - t2;
  if (await page.getByTestId("reconnect-banner").isVisible()) fail("banner still shown");
  await until("the tile live again", async () => !(await frozen.isVisible()));
  if ((status(doorSock) || {}).call !== "in_call") fail("the call did not survive the stall");

  // Hang up: the door is idle, the call is in the history with its snapshot.
  await page.getByTestId("hang-up").click();
  await until("the door idle", () => { const s = status(doorSock); return s && s.call === "idle" && s.last_call_end === "CALL_HUNG_UP"; });
  await until("the history entry", async () => (await page.locator("#history li").count()) === 1);
  if ((await page.locator("#history li img").count()) !== 1) fail("no snapshot in the history");
  figures.history = await page.locator("#history li").textContent();
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(artifacts, "desk-phone.png"), fullPage: true });

  // A browser whose user blocks the camera: the pre-join screen says what to do.
  const blocked = await launchChromium([], true);
  try {
    const p2 = await (await blocked.newContext()).newPage();
    await p2.goto(`http://${addr}/`);
    await until("the sign-in form (blocked browser)", () => p2.locator("#desk-form").isVisible());
    await p2.fill("#desk-user", "desk");
    await p2.fill("#desk-password", password);
    await p2.getByTestId("sign-in").click();
    await until("the blocked-camera explanation", async () => (await p2.locator("#media-problem").isVisible())
      && (await p2.locator("#media-problem").textContent()).includes("blocked"), 15000);
    figures.blocked_text = await p2.locator("#media-problem").textContent();
    await p2.screenshot({ path: join(artifacts, "desk-blocked.png") });
  } finally { await blocked.close().catch(() => {}); }
  console.log(JSON.stringify({ ok: true, ...figures }));
} catch (e) {
  const pageLog = page ? await page.locator("#log").textContent().catch(() => "") : "";
  console.log(JSON.stringify({ ok: false, error: e.message, page_log: pageLog.slice(0, 2000), door: status(doorSock), ...figures }));
  if (page) await page.screenshot({ path: join(artifacts, "desk-failure.png") }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) { try { c.kill("SIGCONT"); } catch { /* gone */ } c.kill("SIGKILL"); }
}
