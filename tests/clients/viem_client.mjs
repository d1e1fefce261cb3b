// viem, unmodified (version in package-lock.json), through Lasso to anvil; run by tests/client_matrix.rs.
// HTTP: the `http` transport with `batch: true` (calls made together leave as one JSON-RPC batch, seen by
// onFetchRequest) answers what single calls answer; a tick and its receipt.
// WebSocket: the `webSocket` transport's watchBlocks and watchEvent (eth_subscribe newHeads / logs) see every block
// and every Tick mined once they are live, in order.

import { createPublicClient, createWalletClient, defineChain, http, parseAbiItem, webSocket } from "viem";
import { ACCOUNT0, TICK_EVENT, TICK_SELECTOR, calling, checker, env, json, main, waitUntil, warmUp } from "./common.mjs";

const mode = process.argv[2];
const client = `viem ${mode}`;
const check = checker(client);
const chain = defineChain({
  id: env.chainId,
  name: "devnet through Lasso",
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [env.httpUrl], webSocket: [env.wsUrl] } },
});
const tickEvent = parseAbiItem(TICK_EVENT);

function clients(transport) {
  return {
    pub: createPublicClient({ chain, transport }),
    wallet: createWalletClient({ chain, transport, account: ACCOUNT0 }),
  };
}

async function sendTick(pub, wallet) {
  const hash = await calling(client, "sendTransaction (eth_sendTransaction)", () =>
    wallet.sendTransaction({ to: env.contract, data: TICK_SELECTOR }),
  );
  const r = await calling(client, "waitForTransactionReceipt", () =>
    pub.waitForTransactionReceipt({ hash, timeout: 20_000, pollingInterval: 100 }),
  );
  check("receipt", r.status === "success" && r.logs.length === 1, () => json(r));
  return r;
}

async function httpChecks() {
  const bodies = [];
  const transport = http(env.httpUrl, {
    batch: true,
    retryCount: 0,
    onFetchRequest: async (req) => {
      bodies.push(await req.clone().json());
    },
  });
  const { pub, wallet } = clients(transport);
  const [chainId, head, balance, code, slot0, block] = await calling(client, "batch", () =>
    Promise.all([
      pub.getChainId(),
      pub.getBlockNumber({ cacheTime: 0 }),
      pub.getBalance({ address: ACCOUNT0 }),
      pub.getCode({ address: env.contract }),
      pub.getStorageAt({ address: env.contract, slot: "0x0" }),
      pub.getBlock(),
    ]),
  );
  check("batch: one JSON-RPC batch", bodies.some((b) => Array.isArray(b) && b.length > 1), () => json(bodies));
  check("batch eth_chainId", chainId === env.chainId, `chain id ${chainId}`);
  check("batch eth_blockNumber", head === block.number, `head ${head}, latest block ${block.number}`);
  check("batch eth_getBalance", balance === (await pub.getBalance({ address: ACCOUNT0 })), "differs from a single call");
  check("batch eth_getCode", code?.length > 2 && code === (await pub.getCode({ address: env.contract })), "differs");
  check("batch eth_getStorageAt", BigInt(slot0) >= 42n, `slot 0 is ${slot0}`);
  const r = await sendTick(pub, wallet);
  const logs = await calling(client, "getLogs (eth_getLogs)", () =>
    pub.getLogs({ address: env.contract, event: tickEvent, fromBlock: r.blockNumber, toBlock: r.blockNumber }),
  );
  check("getLogs", logs.length === 1 && logs[0].args.count === BigInt(slot0) + 1n, () => json(logs));
}

async function wsChecks() {
  const transport = webSocket(env.wsUrl, { reconnect: false, retryCount: 0, timeout: 10_000 });
  const { pub, wallet } = clients(transport);
  const chainId = await calling(client, "getChainId", () => pub.getChainId());
  check("eth_chainId", chainId === env.chainId, `chain id ${chainId}`);
  const blocks = [];
  const ticks = [];
  const errors = [];
  const unwatchBlocks = pub.watchBlocks({
    poll: false,
    onBlock: (b) => blocks.push({ number: b.number, hash: b.hash }),
    onError: (e) => errors.push(`watchBlocks: ${e?.shortMessage ?? e?.message ?? e}`),
  });
  const unwatchEvent = pub.watchEvent({
    address: env.contract,
    event: tickEvent,
    poll: false,
    onLogs: (ls) => ticks.push(...ls.map((l) => ({ count: l.args.count, block: l.blockNumber }))),
    onError: (e) => errors.push(`watchEvent: ${e?.shortMessage ?? e?.message ?? e}`),
  });
  const send = () => sendTick(pub, wallet);

  const live = await warmUp(client, send, () => errors.length > 0 || (blocks.length > 0 && ticks.length > 0));
  check("watchers without error", errors.length === 0, () => errors.join("; "));
  const receipts = [];
  for (let i = 0; i < env.ticks; i++) receipts.push(await send());
  const want = receipts.map((r) => r.blockNumber);
  const after = () => ({ blocks: blocks.filter((b) => b.number > live), ticks: ticks.filter((t) => t.block > live) });
  await waitUntil(
    client,
    "watchers",
    () => errors.length > 0 || (after().blocks.length >= want.length && after().ticks.length >= want.length),
    () => `blocks ${json(after().blocks)}, Ticks ${json(after().ticks)}, want blocks ${json(want)}`,
  );
  check("watchers without error", errors.length === 0, () => errors.join("; "));
  check(
    "watchBlocks: every block, in order",
    json(after().blocks) === json(receipts.map((r) => ({ number: r.blockNumber, hash: r.blockHash }))),
    () => `${json(after().blocks)}, want blocks ${json(want)}`,
  );
  const first = BigInt(await pub.getStorageAt({ address: env.contract, slot: "0x0" })) - BigInt(env.ticks) + 1n;
  check(
    "watchEvent: every Tick, in order",
    json(after().ticks) === json(want.map((block, i) => ({ count: first + BigInt(i), block }))),
    () => `${json(after().ticks)}, want counts from ${first} in blocks ${json(want)}`,
  );
  unwatchBlocks();
  unwatchEvent();
}

main(client, async () => {
  if (mode === "http") await httpChecks();
  else if (mode === "ws") await wsChecks();
  else check("(usage)", false, `unknown mode ${mode}`);
});
