// What the JS clients of the matrix share (tests/client_matrix.rs runs them): the environment the test sets, the Tick
// contract's ABI, and the check helpers. A failed check throws `FAIL <client> <call>: <why>`; `main` prints it and
// exits 1, so the Rust test names the client and the call.

export const env = {
  httpUrl: process.env.LASSO_HTTP_URL,
  wsUrl: process.env.LASSO_WS_URL,
  chainId: Number(process.env.LASSO_CHAIN_ID),
  contract: process.env.LASSO_CONTRACT,
  ticks: Number(process.env.LASSO_TICKS ?? "3"),
};

// anvil dev account 0 (unlocked: transactions go out as eth_sendTransaction).
export const ACCOUNT0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
// Tick contract: every call adds 1 to storage slot 0 (42 at deployment) and emits Tick with the new value.
export const TICK_ABI = ["function tick()", "event Tick(uint256 count)"];
export const TICK_EVENT = "event Tick(uint256 count)";
export const TICK_SELECTOR = "0x3eaf5d9f";
/** How long a listener gets to see what was mined. */
export const EVENT_TIMEOUT_MS = 20_000;

export class CheckFailed extends Error {}

export function json(v) {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));
}

/** A checker for one client: `check(call, cond, why)` prints `ok <client> <call>` or throws. */
export function checker(client) {
  return (call, cond, why) => {
    if (!cond) throw new CheckFailed(`FAIL ${client} ${call}: ${typeof why === "function" ? why() : why}`);
    console.log(`ok ${client} ${call}`);
  };
}

/** Runs `fn(call)` naming the call if it throws. */
export async function calling(client, call, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CheckFailed) throw e;
    const detail = e?.details ?? e?.cause?.message;
    throw new CheckFailed(`FAIL ${client} ${call}: ${e?.shortMessage ?? e?.message ?? e}${detail ? ` (${detail})` : ""}`);
  }
}

/** Polls `cond` (every 50 ms: the pause only spaces the checks) until it holds; throws naming the call at `ms`. */
export async function waitUntil(client, call, cond, why, ms = EVENT_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new CheckFailed(`FAIL ${client} ${call}: not within ${ms} ms: ${why()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs the client's checks; exits 1 with the FAIL line on the first failure. */
export async function main(client, body) {
  try {
    await body();
    console.log(`${client}: all checks passed`);
    process.exit(0);
  } catch (e) {
    console.log(e instanceof CheckFailed ? e.message : `FAIL ${client} (unexpected error): ${e?.stack ?? e}`);
    process.exit(1);
  }
}

/**
 * Listeners that subscribe in the background give no "live" signal: sends ticks (`send()` returns a receipt) until
 * `fired()` holds, giving each tick up to `WARM_UP_WAIT_MS` to be seen. Returns the block of the last warm-up tick:
 * every block and event after it must reach the listeners.
 */
export async function warmUp(client, send, fired) {
  const deadline = Date.now() + EVENT_TIMEOUT_MS;
  for (;;) {
    const r = await send();
    const seen = Date.now() + WARM_UP_WAIT_MS;
    while (!fired() && Date.now() < seen) await new Promise((res) => setTimeout(res, 50));
    if (fired()) return r.blockNumber;
    if (Date.now() > deadline) throw new CheckFailed(`FAIL ${client} listeners: none fired within ${EVENT_TIMEOUT_MS} ms`);
  }
}
const WARM_UP_WAIT_MS = 1000;
