// The page over https by a name that is not localhost (a secure context only because of
// TLS): Debian's Chromium maps the name to 127.0.0.1 and trusts the test certificate by its
// key, publishes its fake camera and microphone, and plays a `callbox peer` engine that
// logs in over wss. Run inside a network namespace with only `lo` (tests/browser.rs).
//
//   node https.mjs <callbox binary> <server.toml with [tls]> <CA file> <name> <SPKI sha256 base64>
//
// Prints one JSON line and exits 0, or prints why and exits 1.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fail, jsonLines, launchChromium, until } from "./lib.mjs";

const [bin, cfg, ca, name, spki] = process.argv.slice(2);
const children = [];
const env = { ...process.env, RUST_LOG: process.env.CHILD_LOG || "warn" };

let browser;
const figures = {};
try {
  const server = spawn(bin, ["server", "--dev", "--config", cfg, "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"], env });
  children.push(server);
  const port = await new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).once("line", (line) => {
      const m = line.match(/https:\/\/[^:]+:(\d+)/);
      m ? resolve(m[1]) : reject(new Error("server did not start with TLS: " + line));
    });
  });
  const peer = spawn(bin, ["peer", "--dev", "--server", `wss://localhost:${port}`, "--ca-file", ca, "--room", "lobby", "--user", "door", "--publish", "door-main"],
    { stdio: ["pipe", "pipe", "inherit"], env });
  children.push(peer);
  const events = jsonLines(peer);
  await until("the peer in the room over wss", () => events.find((e) => e.event === "state" && e.state === "Connected"));

  browser = await launchChromium([`--host-resolver-rules=MAP ${name} 127.0.0.1`, `--ignore-certificate-errors-spki-list=${spki}`]);
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  const t0 = Date.now();
  await page.goto(`https://${name}:${port}/?app_id=1234&room=lobby&user=desk&name=Desk&autojoin=1&mode=room`);
  if (!(await page.evaluate(() => window.isSecureContext && !!navigator.mediaDevices))) fail("not a secure context");
  await until("Connected", async () => (await page.getByTestId("room-state").getAttribute("data-state")) === "Connected");
  const frames = async () => {
    const el = page.locator('.tile[data-stream-id="door-main"] [data-testid="frames-decoded"]');
    return (await el.count()) ? Number(await el.first().textContent()) : 0;
  };
  await until("door-main decoding in the page", async () => (await frames()) > 30);
  figures.page_plays_ms = Date.now() - t0;
  await until("the peer decoding the page's camera and microphone", () => events.find((e) => e.event === "quality" && e.stream_id === "desk-main" && e.frames_decoded > 10 && e.audio_decoded > 0));
  figures.peer_plays_ms = Date.now() - t0;
  console.log(JSON.stringify({ ok: true, ...figures }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.message, ...figures }));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill("SIGKILL");
}
