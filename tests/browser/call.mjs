// The browser page in a real call: Debian's Chromium (headless, fake camera and microphone),
// driven by playwright-core, against the real `callbox server --dev` and a `callbox peer`
// engine publishing a test pattern. Run inside a network namespace with only `lo`
// (tests/browser.rs does: unshare -n), so every ICE candidate is 127.0.0.1.
//
//   node call.mjs <callbox binary> <artifact dir>
//
// Prints one JSON line of figures and exits 0, or prints why and exits 1.

import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fail, jsonLines, launchChromium, until } from "./lib.mjs";

const [bin, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const dir = mkdtempSync(join(tmpdir(), "callbox-browser-"));
const children = [];


function startServer(listen) {
  const cfg = join(dir, "server.toml");
  writeFileSync(cfg, `[media]\nbind = "127.0.0.1"\nport = 0\n[session]\ngrace_secs = 30\n`);
  const p = spawn(bin, ["server", "--dev", "--config", cfg, "--listen", listen], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: process.env.CHILD_LOG || "warn" } });
  children.push(p);
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: p.stdout });
    rl.once("line", (line) => {
      const m = line.match(/http:\/\/(\S+)/);
      m ? resolve({ proc: p, addr: m[1] }) : reject(new Error("server did not start: " + line));
    });
  });
}

function startPeer(addr, user, publish, extra = []) {
  const args = ["peer", "--dev", "--server", `ws://${addr}`, "--room", "lobby", "--user", user, ...extra];
  if (publish) args.push("--publish", publish);
  const p = spawn(bin, args,
    { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, RUST_LOG: process.env.CHILD_LOG || "warn" } });
  children.push(p);
  return { proc: p, events: jsonLines(p) };
}

async function frames(page, stream) {
  const el = page.locator(`.tile[data-stream-id="${stream}"] [data-testid="frames-decoded"]`);
  return (await el.count()) ? Number(await el.first().textContent()) : 0;
}

const figures = {};
let peerEvents = [];
let browser, page;
try {
  let server = await startServer("127.0.0.1:0");
  const addr = server.addr;
  const peer = startPeer(addr, "door", "door-main");
  peerEvents = peer.events;
  // A second member that only watches: it sees the browser leave after the door has gone.
  const watcher = startPeer(addr, "watcher", null);
  await until("the peer in the room", () => peer.events.find((e) => e.event === "state" && e.state === "Connected"));

  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => console.error("page error:", e.message));
  const t0 = Date.now();
  await page.goto(`http://${addr}/?app_id=1234&room=lobby&user=browser&name=Laptop&autojoin=1&mode=room`);
  await until("Connected", async () => (await page.getByTestId("room-state").getAttribute("data-state")) === "Connected");
  figures.join_ms = Date.now() - t0;

  // The browser decodes the engine's H.264 video.
  await until("door-main decoding in the page", async () => (await frames(page, "door-main")) > 30);
  figures.first_frames_ms = Date.now() - t0;
  const codec = await page.locator('.tile[data-stream-id="door-main"]').getAttribute("data-codec");
  if (codec !== "video/H264") fail(`negotiated ${codec}, not H264`);
  const before = await frames(page, "door-main");
  await new Promise((r) => setTimeout(r, 1000));
  const after = await frames(page, "door-main");
  if (after <= before) fail(`frames not rising: ${before} -> ${after}`);
  figures.page_fps = after - before;
  // Its audio comes as RED (each packet also carries the one before) and decodes: a
  // malformed RED packet is dropped, and the decoder would conceal nearly everything.
  const tile = page.locator('.tile[data-stream-id="door-main"]');
  if ((await tile.getAttribute("data-audio-red")) !== "true") fail("the server did not answer RED for the page's audio");
  await until("door-main's audio decoding in the page", async () => Number(await tile.getAttribute("data-audio-samples")) > 48000);
  const samples = Number(await tile.getAttribute("data-audio-samples"));
  const concealed = Number(await tile.getAttribute("data-audio-concealed"));
  figures.audio_concealed = concealed / samples;
  if (concealed > 0.2 * samples) fail(`the page concealed ${concealed} of ${samples} audio samples`);
  const tileUser = await page.locator('.tile[data-stream-id="door-main"] [data-testid="tile-user"]').textContent();
  if (tileUser !== "door") fail(`tile labelled ${tileUser}`);

  // Media controls, both ways. The door's tone makes its tile speak; the server relays the
  // door's network levels to its tile.
  await until("the door's tile speaking", async () => (await tile.getAttribute("class")).includes("speaking"));
  await until("the door's network on its tile", async () => (await tile.getByTestId("tile-network").textContent()).includes("↑"));
  const badge = (id) => tile.getByTestId(id).isVisible();
  peer.proc.stdin.write("camera off\n");
  await until("the camera-off badge", async () => (await badge("tile-camera-off")) && (await tile.getAttribute("data-video")) === "off");
  if (!(await tile.getByTestId("tile-placeholder").isVisible())) fail("a camera switched off still shows its (frozen) picture");
  peer.proc.stdin.write("mic off\n");
  await until("the muted badge", () => badge("tile-muted"));
  await until("the muted door silent on its tile", async () => Number(await tile.getAttribute("data-level")) < 0.01 && !(await tile.getAttribute("class")).includes("speaking"));
  figures.muted_level = Number(await tile.getAttribute("data-level"));
  await page.screenshot({ path: join(artifacts, "browser-controls.png") });
  peer.proc.stdin.write("mic on\ncamera on\n");
  await until("the badges gone", async () => !(await badge("tile-muted")) && !(await badge("tile-camera-off")) && !(await tile.getByTestId("tile-placeholder").isVisible()));
  const picture = await frames(page, "door-main");
  await until("the door's picture back", async () => (await frames(page, "door-main")) > picture + 10);
  // The page's own switches reach the engine as the stream's state.
  const told = (what, value) => peer.events.find((e) => e.event === "stream_state" && e.stream_id === "browser-main" && e[what] === value);
  await page.getByTestId("camera").click();
  await until("the peer told the page's camera is off", () => told("video", "off"));
  await page.getByTestId("camera").click();
  await until("the peer told it is on again", () => told("video", "on"));
  await page.getByTestId("mute").click();
  await until("the peer told the page's microphone is off", () => told("audio", "off"));
  await page.getByTestId("mute").click();
  await page.getByTestId("speaker").click();
  if (!(await page.locator('.tile[data-stream-id="door-main"] video').evaluate((v) => v.muted))) fail("speaker off left the door audible");
  await page.getByTestId("speaker").click();
  if (await page.locator('.tile[data-stream-id="door-main"] video').evaluate((v) => v.muted)) fail("speaker on left the door muted");
  // A station without a camera: its tile says audio only and shows no picture.
  const lift = startPeer(addr, "lift", "lift-main", ["--no-camera"]);
  const liftTile = page.locator('.tile[data-stream-id="lift-main"]');
  await until("the lift's audio-only tile", async () => (await liftTile.count()) && (await liftTile.getAttribute("data-video")) === "absent"
    && (await liftTile.getByTestId("tile-placeholder").textContent()).includes("Audio only"));
  await until("the lift heard", async () => Number(await liftTile.getAttribute("data-audio-samples")) > 48000);
  await page.screenshot({ path: join(artifacts, "browser-audio-only.png") });
  lift.proc.stdin.end();
  await until("the lift gone", async () => (await liftTile.count()) === 0);

  // The engine decodes the browser's video and audio.
  await until("the peer decoding browser-main", () => peer.events.find((e) => e.event === "quality" && e.stream_id === "browser-main" && e.frames_decoded > 10 && e.audio_decoded > 0));
  if (!peer.events.find((e) => e.event === "user" && e.update === "add" && e.user_id === "browser")) fail("the peer did not see the browser join");
  const users = await page.getByTestId("user-list").textContent();
  if (!users.includes("door")) fail(`user list: ${users}`);
  const streams = await page.getByTestId("stream-list").textContent();
  if (!streams.includes("door-main")) fail(`stream list: ${streams}`);
  await page.waitForTimeout(3200); // one quality report on the tiles for the screenshot
  await page.screenshot({ path: join(artifacts, "browser-call.png") });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(artifacts, "browser-call-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });

  // The server restarts (kill -9, same address): the page reconnects and plays again.
  server.proc.kill("SIGKILL");
  await until("the page reconnecting", async () => (await page.getByTestId("room-state").getAttribute("data-state")) !== "Connected");
  const t1 = Date.now();
  server = await startServer(addr);
  await until("Connected again", async () => (await page.getByTestId("room-state").getAttribute("data-state")) === "Connected");
  const mark = peer.events.length;
  await until("door-main decoding again", async () => (await frames(page, "door-main")) > 30);
  figures.back_after_restart_ms = Date.now() - t1;
  await until("the peer decoding the browser again", () => peer.events.slice(mark).find((e) => e.event === "quality" && e.stream_id === "browser-main" && e.frames_decoded > 10));

  // The door leaves: the page's lists and grid follow.
  peer.proc.stdin.end();
  await until("door gone from the page's user list", async () => !(await page.getByTestId("user-list").textContent()).includes("door"));
  await until("door-main gone from the page", async () => !(await page.getByTestId("stream-list").textContent()).includes("door-main")
    && (await page.locator('.tile[data-stream-id="door-main"]').count()) === 0);

  // The page leaves: the watcher sees the browser's stream and user go; the page is empty.
  const mark2 = watcher.events.length;
  await page.getByTestId("leave").click();
  await until("the watcher seeing browser-main deleted", () => watcher.events.slice(mark2).find((e) => e.event === "stream" && e.update === "delete" && e.stream_id === "browser-main"));
  await until("the watcher seeing the browser leave", () => watcher.events.slice(mark2).find((e) => e.event === "user" && e.update === "delete" && e.user_id === "browser"));
  // The server tells the others before the page has its logout reply: wait for the page too.
  await until("the page Disconnected after leave", async () => (await page.getByTestId("room-state").getAttribute("data-state")) === "Disconnected");
  if ((await page.getByTestId("user-list").locator("li").count()) !== 0) fail("user list not cleared");
  console.log(JSON.stringify({ ok: true, ...figures }));
  process.exitCode = 0;
} catch (e) {
  const pageLog = page ? await page.locator("#log").textContent().catch(() => "") : "";
  const pub = page ? await page.getByTestId("publisher-state").textContent().catch(() => "") : "";
  console.log(JSON.stringify({ ok: false, error: e.message, publisher_state: pub, page_log: pageLog, peer_events: peerEvents.slice(-15), ...figures }));
  if (page) await page.screenshot({ path: join(artifacts, "browser-failure.png") }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill("SIGKILL");
}
