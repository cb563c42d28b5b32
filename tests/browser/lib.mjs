// What the browser scripts share: failing with a reason and waiting for a condition.

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
