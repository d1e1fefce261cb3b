// ethers v6, unmodified (version in package-lock.json), through Lasso to anvil; run by tests/client_matrix.rs.
// HTTP: JsonRpcProvider with its default batching (calls made together travel as one JSON-RPC batch, seen on the
// provider's debug events) answers what single calls answer; a tick through a JsonRpcSigner and its receipt.
// WebSocket: WebSocketProvider on("block") and a Contract's on("Tick") listener see every block and every Tick mined
// once they are live, in order.

import { Contract, JsonRpcProvider, WebSocketProvider } from "ethers";
import { ACCOUNT0, TICK_ABI, calling, checker, env, json, main, waitUntil, warmUp } from "./common.mjs";

const mode = process.argv[2];
const client = `ethers ${mode}`;
const check = checker(client);

async function http() {
  const provider = new JsonRpcProvider(env.httpUrl);
  const payloads = [];
  provider.on("debug", (e) => e.action === "sendRpcPayload" && payloads.push(e.payload));
  const network = await calling(client, "getNetwork", () => provider.getNetwork());
  check("eth_chainId", network.chainId === BigInt(env.chainId), `chain id ${network.chainId}`);

  payloads.length = 0;
  const [head, balance, code, slot0, block] = await calling(client, "batch", () =>
    Promise.all([
      provider.getBlockNumber(),
      provider.getBalance(ACCOUNT0),
      provider.getCode(env.contract),
      provider.getStorage(env.contract, 0),
      provider.getBlock("latest"),
    ]),
  );
  check("default batching", payloads.some((p) => Array.isArray(p) && p.length > 1), () => `payloads ${json(payloads)}`);
  check("batch eth_blockNumber", head === block.number, `head ${head}, latest block ${block.number}`);
  check("batch eth_getBalance", balance === (await provider.getBalance(ACCOUNT0)), "differs from a single call");
  check("batch eth_getCode", code.length > 2 && code === (await provider.getCode(env.contract)), "differs from a single call");
  check("batch eth_getStorageAt", slot0 === (await provider.getStorage(env.contract, 0)), "differs from a single call");

  const signer = await calling(client, "getSigner (eth_accounts)", () => provider.getSigner(0));
  const tick = new Contract(env.contract, TICK_ABI, signer);
  const tx = await calling(client, "tick() (eth_sendTransaction)", () => tick.tick());
  const receipt = await calling(client, "wait (eth_getTransactionReceipt)", () => tx.wait(1, 20_000));
  check("receipt", receipt.status === 1 && receipt.logs.length === 1, () => json(receipt));
  const events = await calling(client, "queryFilter (eth_getLogs)", () =>
    tick.queryFilter("Tick", receipt.blockNumber, receipt.blockNumber),
  );
  check("Tick event", events.length === 1 && events[0].args.count === BigInt(slot0) + 1n, () => json(events));
  provider.destroy();
}

async function ws() {
  const provider = new WebSocketProvider(env.wsUrl);
  const network = await calling(client, "getNetwork", () => provider.getNetwork());
  check("eth_chainId", network.chainId === BigInt(env.chainId), `chain id ${network.chainId}`);
  const blocks = [];
  const ticks = [];
  await calling(client, 'on("block") (eth_subscribe newHeads)', () => provider.on("block", (n) => blocks.push(n)));
  const signer = await calling(client, "getSigner (eth_accounts)", () => provider.getSigner(0));
  const tick = new Contract(env.contract, TICK_ABI, signer);
  await calling(client, 'contract.on("Tick") (eth_subscribe logs)', () =>
    tick.on("Tick", (count, ev) => ticks.push({ count, block: ev.log.blockNumber })),
  );
  const send = async () => {
    const tx = await calling(client, "tick() (eth_sendTransaction)", () => tick.tick());
    return calling(client, "wait (eth_getTransactionReceipt)", () => tx.wait(1, 20_000));
  };

  const live = await warmUp(client, send, () => blocks.length > 0 && ticks.length > 0);
  const receipts = [];
  for (let i = 0; i < env.ticks; i++) receipts.push(await send());
  const want = receipts.map((r) => r.blockNumber);
  const after = () => ({ blocks: blocks.filter((n) => n > live), ticks: ticks.filter((t) => t.block > live) });
  await waitUntil(
    client,
    "listeners",
    () => after().blocks.length >= want.length && after().ticks.length >= want.length,
    () => `blocks ${json(after().blocks)}, Ticks ${json(after().ticks)}, want blocks ${json(want)}`,
  );
  check('on("block"): every block, in order', json(after().blocks) === json(want), () => `${json(after().blocks)} != ${json(want)}`);
  const first = BigInt(await provider.getStorage(env.contract, 0)) - BigInt(env.ticks) + 1n;
  const counts = want.map((_, i) => first + BigInt(i));
  check(
    'contract.on("Tick"): every event, in order',
    json(after().ticks) === json(want.map((block, i) => ({ count: counts[i], block }))),
    () => `${json(after().ticks)}, want counts ${json(counts)} in blocks ${json(want)}`,
  );
  await calling(client, "removeAllListeners (eth_unsubscribe)", () => provider.removeAllListeners());
  await provider.destroy();
}

main(client, async () => {
  if (mode === "http") await http();
  else if (mode === "ws") await ws();
  else check("(usage)", false, `unknown mode ${mode}`);
});
