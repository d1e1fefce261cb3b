// Real Ethereum clients over WebSocket (viem, ethers v6, wscat — all unchanged) talking to ganache *through Lasso*.
//
// Usage: LASSO_WS_URL=ws://127.0.0.1:PORT/ws/rpc/devnet node tests/js/ws_clients.mjs
// Optional: LASSO_CHAIN_ID (default 1337), LASSO_JS_TIMEOUT_MS (default 50000).
//
// Driven by tests/ws_real_clients.rs, which starts two ganache nodes (--miner.blockTime 1, --wallet.deterministic,
// WebSocket on the HTTP port) and Lasso in front of them (priority routing, so p1 carries the traffic).
// Checks:
//   (a) viem webSocket transport: getChainId; watchBlocks (eth_subscribe newHeads) sees >= 3 consecutive blocks, each
//       number = previous + 1 and parentHash = previous hash; a tiny contract (raw bytecode, emits `Ping(uint256)` with
//       the calldata word) is deployed and called by a local account through the same WS endpoint, and watchEvent
//       (eth_subscribe logs with {address, topics}) receives both logs, in order, matching the receipts;
//   (b) ethers v6 `new WebSocketProvider(url)`: getBlockNumber, getNetwork().chainId, on("block") >= 2 blocks;
//   (c) wscat -x eth_subscribe newHeads -w 3: its output holds an eth_subscription notification for the id it got.
// Exits 0 when every check passes; otherwise prints `FAIL: <what>` to stderr and exits 1.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { WebSocketProvider } from "ethers";
import {
  concat,
  createPublicClient,
  createWalletClient,
  defineChain,
  keccak256,
  numberToHex,
  parseAbiItem,
  size,
  toHex,
  webSocket,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";

// ganache --wallet.deterministic: account 0 and its key.
const ACCOUNT0 = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";
const ACCOUNT0_KEY = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";

const url = process.env.LASSO_WS_URL;
const expectedChainId = BigInt(process.env.LASSO_CHAIN_ID ?? "1337");
const timeoutMs = Number(process.env.LASSO_JS_TIMEOUT_MS ?? "50000");
const here = path.dirname(fileURLToPath(import.meta.url));
const WSCAT = path.join(here, "node_modules/wscat/bin/wscat");

class CheckFailed extends Error {}

function fail(msg) {
  throw new CheckFailed(msg);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

function step(msg) {
  console.log(`[ws_clients] ${msg}`);
}

function json(v) {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` every 50 ms until true; fails with `what()` after `ms`. */
async function waitUntil(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) fail(what());
    await sleep(50);
  }
}

// ---- the contract: raw EVM, no compiler ------------------------------------------------------------------------------
// Runtime: mstore(0, calldataload(0)); log1(0, 32, keccak256("Ping(uint256)")); stop
//   60 00 35 | 60 00 52 | 7f <topic> | 60 20 | 60 00 | a1 | 00
// Init: codecopy(0, 12, len); return(0, len)
//   60 len 60 0c 60 00 39 | 60 len 60 00 f3
const PING = parseAbiItem("event Ping(uint256 value)");
const PING_TOPIC = keccak256(toHex("Ping(uint256)"));

function pingBytecode() {
  const runtime = concat(["0x6000356000527f", PING_TOPIC, "0x60206000a100"]);
  const len = size(runtime);
  check(len === 45, `runtime is ${len} bytes, want 45`);
  const lenHex = numberToHex(len, { size: 1 }).slice(2);
  const init = `0x60${lenHex}600c600039` + `60${lenHex}6000f3`;
  check(size(init) === 12, `init code is ${size(init)} bytes, want 12`);
  return concat([init, runtime]);
}

// ---- (a) viem --------------------------------------------------------------------------------------------------------
async function viemChecks(errors) {
  const chain = defineChain({
    id: Number(expectedChainId),
    name: "devnet via Lasso",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [], webSocket: [url] } },
  });
  // reconnect: false so a dropped socket is an error here, not silently papered over by viem's reconnect logic.
  const transport = webSocket(url, { reconnect: false, retryCount: 0, timeout: 10_000 });
  const client = createPublicClient({ chain, transport });
  const wallet = createWalletClient({ chain, transport, account: privateKeyToAccount(ACCOUNT0_KEY) });
  check(wallet.account.address === ACCOUNT0, `deterministic key gives ${wallet.account.address}, want ${ACCOUNT0}`);

  const chainId = await client.getChainId();
  check(BigInt(chainId) === expectedChainId, `viem getChainId ${chainId}, want ${expectedChainId}`);
  const start = await client.getBlockNumber({ cacheTime: 0 });
  step(`viem: chain id ${chainId}, block ${start}`);

  // watchBlocks over eth_subscribe newHeads.
  const blocks = [];
  const unwatchBlocks = client.watchBlocks({
    poll: false,
    onBlock: (b) => {
      const prev = blocks[blocks.length - 1];
      if (prev && b.number !== prev.number + 1n) {
        errors.push(`viem watchBlocks: block ${b.number} after ${prev.number} (want ${prev.number + 1n})`);
      } else if (prev && b.parentHash !== prev.hash) {
        errors.push(`viem watchBlocks: block ${b.number} parentHash ${b.parentHash} != hash of ${prev.number} ${prev.hash}`);
      }
      blocks.push({ number: b.number, hash: b.hash, parentHash: b.parentHash });
    },
    onError: (e) => errors.push(`viem watchBlocks onError: ${e?.shortMessage ?? e?.message ?? e}`),
  });

  // Deploy the Ping contract through Lasso's WS endpoint (eth_estimateGas, eth_getTransactionCount, fees,
  // eth_sendRawTransaction — all ordinary methods over the socket).
  const deployHash = await wallet.deployContract({ abi: [PING], bytecode: pingBytecode() });
  const deployReceipt = await client.waitForTransactionReceipt({ hash: deployHash, timeout: 20_000, pollingInterval: 250 });
  check(deployReceipt.status === "success", `deploy receipt: ${json(deployReceipt)}`);
  const address = deployReceipt.contractAddress;
  check(typeof address === "string", `deploy receipt has no contractAddress: ${json(deployReceipt)}`);
  const code = await client.getCode({ address });
  check(code && size(code) === 45, `getCode(${address}) = ${code}, want the 45-byte runtime`);
  step(`viem: deployed Ping at ${address} in block ${deployReceipt.blockNumber} (tx ${deployHash})`);

  // watchEvent over eth_subscribe logs {address, topics: [Ping]}.
  const logs = [];
  const unwatchEvent = client.watchEvent({
    address,
    event: PING,
    poll: false,
    onLogs: (ls) => logs.push(...ls),
    onError: (e) => errors.push(`viem watchEvent onError: ${e?.shortMessage ?? e?.message ?? e}`),
  });
  // watchEvent gives no "subscribed" signal; one block time lets the eth_subscribe answer come back first.
  await sleep(1500);
  check(errors.length === 0, errors.join("; "));

  const values = [0x1234_5678n, 0xdead_beefn];
  const receipts = [];
  for (const v of values) {
    const hash = await wallet.sendTransaction({ to: address, data: numberToHex(v, { size: 32 }) });
    const r = await client.waitForTransactionReceipt({ hash, timeout: 20_000, pollingInterval: 250 });
    check(r.status === "success" && r.logs.length === 1, `Ping(${v}) receipt: ${json(r)}`);
    receipts.push(r);
    step(`viem: Ping(${v}) mined in block ${r.blockNumber} (tx ${hash})`);
  }
  await waitUntil(
    () => logs.length >= values.length || errors.length > 0,
    10_000,
    () => `viem watchEvent received ${logs.length} logs, want ${values.length}: ${json(logs)}`,
  );
  check(errors.length === 0, errors.join("; "));
  check(logs.length === values.length, `viem watchEvent: ${logs.length} logs, want exactly ${values.length}: ${json(logs)}`);
  logs.forEach((log, i) => {
    const r = receipts[i];
    check(log.eventName === "Ping", `log ${i}: eventName ${log.eventName}: ${json(log)}`);
    check(log.args.value === values[i], `log ${i}: value ${log.args.value}, want ${values[i]}: ${json(log)}`);
    check(log.address.toLowerCase() === address.toLowerCase(), `log ${i}: address ${log.address}, want ${address}`);
    check(log.transactionHash === r.transactionHash, `log ${i}: tx ${log.transactionHash}, want ${r.transactionHash}`);
    check(log.blockNumber === r.blockNumber, `log ${i}: block ${log.blockNumber}, want ${r.blockNumber}`);
    check(log.blockHash === r.blockHash, `log ${i}: blockHash ${log.blockHash}, want ${r.blockHash}`);
    check(log.removed !== true, `log ${i}: removed: ${json(log)}`);
  });
  step(`viem watchEvent: ${logs.length} Ping logs in order (values ${logs.map((l) => l.args.value).join(", ")})`);

  await waitUntil(
    () => blocks.length >= 3 || errors.length > 0,
    15_000,
    () => `viem watchBlocks saw ${blocks.length} blocks (${blocks.map((b) => b.number).join(", ")}), want >= 3`,
  );
  check(errors.length === 0, errors.join("; "));
  const last = blocks[blocks.length - 1].number;
  check(last > start, `viem watchBlocks: last block ${last} not after start ${start}`);
  step(`viem watchBlocks: ${blocks.length} consecutive blocks ${blocks[0].number}..${last}, parent hashes chain`);

  unwatchBlocks();
  unwatchEvent();
  await sleep(200); // let eth_unsubscribe go out before closing
  const socket = await transport({ chain }).value.getRpcClient();
  socket.close();
  return { address, blocksSeen: blocks.length };
}

// ---- (b) ethers ------------------------------------------------------------------------------------------------------
async function ethersChecks(errors, address) {
  const provider = new WebSocketProvider(url);
  try {
    const n = await provider.getBlockNumber();
    check(Number.isInteger(n) && n > 0, `ethers getBlockNumber: ${n}`);
    const network = await provider.getNetwork();
    check(network.chainId === expectedChainId, `ethers getNetwork().chainId = ${network.chainId}, want ${expectedChainId}`);
    step(`ethers: block ${n}, chain id ${network.chainId}`);

    const code = await provider.getCode(address);
    check(code.length === 2 + 45 * 2, `ethers getCode(${address}) = ${code}`);
    const pings = await provider.getLogs({ address, topics: [PING_TOPIC], fromBlock: 0, toBlock: "latest" });
    check(pings.length === 2, `ethers getLogs(Ping) over WS: ${pings.length} logs, want 2`);

    const seen = [];
    await provider.on("block", (b) => seen.push(b));
    await waitUntil(
      () => seen.length >= 2,
      10_000,
      () => `ethers on("block") saw ${seen.length} blocks (${seen.join(", ")}), want >= 2`,
    );
    for (let i = 1; i < seen.length; i++) {
      check(seen[i] > seen[i - 1], `ethers on("block"): ${seen[i]} after ${seen[i - 1]}`);
    }
    check(seen[seen.length - 1] > n, `ethers on("block"): last ${seen[seen.length - 1]} not after ${n}`);
    step(`ethers on("block"): ${seen.join(", ")}`);

    // A raw subscribe/unsubscribe pair through the same provider: Lasso's ids, `true` for a live one, `false` after.
    const subId = await provider.send("eth_subscribe", ["newHeads"]);
    check(typeof subId === "string" && /^0x[0-9a-f]+$/i.test(subId), `eth_subscribe returned ${json(subId)}`);
    const unsub1 = await provider.send("eth_unsubscribe", [subId]);
    const unsub2 = await provider.send("eth_unsubscribe", [subId]);
    check(unsub1 === true && unsub2 === false, `eth_unsubscribe(${subId}): ${json(unsub1)} then ${json(unsub2)}, want true then false`);
    step(`ethers: eth_subscribe -> ${subId}, eth_unsubscribe -> true, again -> false`);

    await provider.off("block");
    // off() sends eth_unsubscribe without awaiting it; destroy() would cancel it (an unhandled rejection).
    await sleep(300);
  } finally {
    await provider.destroy();
  }
  check(errors.length === 0, errors.join("; "));
}

// ---- (c) wscat -------------------------------------------------------------------------------------------------------
function runWscat(args, limitMs) {
  return new Promise((resolve, reject) => {
    // stdin must stay open: wscat exits as soon as its stdin (readline) reaches EOF, even with -x/-w.
    const child = spawn(process.execPath, [WSCAT, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new CheckFailed(`wscat did not exit within ${limitMs} ms; stdout: ${out} stderr: ${err}`));
    }, limitMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new CheckFailed(`wscat: ${e.message}`));
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ code, signal, out, err });
    });
  });
}

async function wscatChecks() {
  const sub = '{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}';
  const r = await runWscat(["--no-color", "-c", url, "-x", sub, "-w", "3"], 15_000);
  const messages = [];
  for (const line of r.out.split("\n")) {
    const i = line.indexOf("{");
    if (i < 0) continue;
    try {
      messages.push(JSON.parse(line.slice(i)));
    } catch {
      // prompt fragments etc.
    }
  }
  const reply = messages.find((m) => m.id === 1);
  check(
    reply && typeof reply.result === "string",
    `wscat: no eth_subscribe answer (exit ${r.code}/${r.signal}); stdout: ${r.out} stderr: ${r.err}`,
  );
  const notes = messages.filter((m) => m.method === "eth_subscription" && m.params?.subscription === reply.result);
  check(
    notes.length >= 1,
    `wscat: no eth_subscription notification for ${reply.result} within 3 s (exit ${r.code}); stdout: ${r.out} stderr: ${r.err}`,
  );
  for (const n of notes) {
    check(/^0x[0-9a-f]+$/i.test(n.params.result?.number ?? ""), `wscat: notification without a block number: ${json(n)}`);
  }
  step(`wscat: subscription ${reply.result}, ${notes.length} notifications (blocks ${notes.map((n) => Number(n.params.result.number)).join(", ")})`);
}

async function main() {
  if (!url) fail("LASSO_WS_URL is not set (e.g. ws://127.0.0.1:4000/ws/rpc/devnet)");
  step(`LASSO_WS_URL=${url} expected chain id ${expectedChainId}`);
  const errors = [];
  const { address } = await viemChecks(errors);
  await ethersChecks(errors, address);
  await wscatChecks();
}

try {
  await withTimeout(main(), timeoutMs, "ws_clients");
  console.log("[ws_clients] OK: all checks passed");
  process.exit(0);
} catch (e) {
  if (e instanceof CheckFailed) {
    console.error(`[ws_clients] FAIL: ${e.message}`);
  } else {
    console.error(`[ws_clients] FAIL: unexpected error: ${e?.stack ?? e}`);
  }
  process.exit(1);
}
