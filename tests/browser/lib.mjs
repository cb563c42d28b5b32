// What the browser scripts share: failing with a reason, waiting for a condition, starting
// Chromium and reading a `callbox peer`'s JSON lines.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const WAIT = 30000;

export function fail(msg) { throw new Error(msg); }

// Polls `fn` every 200 ms until it returns something truthy, at most `ms`.
export async function until(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e.message; }
    await new Promise((r) => setTimeout(r, 200));
  }
  fail(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

// Debian's Chromium, headless, with a fake camera and microphone; `extra` adds flags.
// `askUser: true` leaves out the flag that accepts every camera prompt (then a prompt is
// refused, as a user who clicks Block would).
export function launchChromium(extra = [], askUser = false) {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
      ...(askUser ? [] : ["--use-fake-ui-for-media-stream"]), "--allow-loopback-in-peer-connection", ...extra],
  });
}

// The JSON lines a child (a `callbox peer`) prints, collected as they come.
export function jsonLines(proc) {
  const events = [];
  createInterface({ input: proc.stdout }).on("line", (l) => { try { events.push(JSON.parse(l)); } catch { /* not ours */ } });
  return events;
}
