// The page on a network that drops UDP: Debian's Chromium (headless) plays a `callbox peer`
// engine's stream over ICE-TCP. Run inside a network namespace with only `lo` (tests/browser.rs
// does: unshare -n); nftables drops UDP between the browser's address (127.0.0.1) and the
// server's media port, while the engine (media bound to 127.0.0.2) keeps UDP.
//
//   node tcp.mjs <callbox binary>
//
// Prints one JSON line of figures and exits 0, or prints why and exits 1.

import { spawn, execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fail, jsonLines, launchChromium, until } from "./lib.mjs";

const [bin] = process.argv.slice(2);
const dir = mkdtempSync(join(tmpdir(), "callbox-browser-tcp-"));
const children = [];
const env = { ...process.env, RUST_LOG: process.env.CHILD_LOG || "warn" };

let browser;
const figures = {};
try {
  const cfg = join(dir, "server.toml");
  writeFileSync(cfg, `[media]\nbind = "127.0.0.1"\nport = 0\n`);
  const server = spawn(bin, ["server", "--dev", "--config", cfg, "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"], env });
  children.push(server);
  const addr = await new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).once("line", (line) => {
      const m = line.match(/http:\/\/(\S+)/);
      m ? resolve(m[1]) : reject(new Error("server did not start: " + line));
    });
  });
  const health = await (await fetch(`http://${addr}/healthz`)).json();
  if (!health.media_tcp_port) fail(`no ICE-TCP port in /healthz: ${JSON.stringify(health)}`);
  const mp = health.media_port;
  execFileSync("nft", ["-f", "-"], { input: `table inet callbox_tcp_test {
  chain out { type filter hook output priority 0;
    ip saddr 127.0.0.1 udp dport ${mp} drop
    ip daddr 127.0.0.1 udp sport ${mp} drop
  }
}
` });
  const peer = spawn(bin, ["peer", "--dev", "--server", `ws://${addr}`, "--room", "lobby", "--user", "door", "--publish", "door-main", "--bind", "127.0.0.2"],
    { stdio: ["pipe", "pipe", "inherit"], env });
  children.push(peer);
  const events = jsonLines(peer);
  await until("the peer in the room", () => events.find((e) => e.event === "state" && e.state === "Connected"));

  browser = await launchChromium();
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  const t0 = Date.now();
  await page.goto(`http://${addr}/?app_id=1234&room=lobby&user=browser&name=Laptop&autojoin=1&mode=room`);
  const decoded = page.locator(`.tile[data-stream-id="door-main"] [data-testid="frames-decoded"]`);
  await until("the page decodes door-main", async () => (await decoded.count()) && Number(await decoded.first().textContent()) > 10);
  figures.first_frames_ms = Date.now() - t0;
  const metrics = await (await fetch(`http://${addr}/metrics`)).text();
  const tcp = Number((metrics.match(/^callbox_media_connections_tcp (\d+)/m) || [])[1]);
  figures.connections_tcp = tcp;
  if (!(tcp >= 1)) fail(`the page's media does not run over ICE-TCP: callbox_media_connections_tcp ${tcp}`);
  const dropped = execFileSync("nft", ["list", "table", "inet", "callbox_tcp_test"]).toString();
  figures.udp_blocked = /drop/.test(dropped);
  console.log(JSON.stringify({ ok: true, ...figures }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.message, ...figures }));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children) c.kill("SIGKILL");
}
