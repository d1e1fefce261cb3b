// An indexer's pull with viem, unmodified (version in package-lock.json): every block with its transactions, every
// transaction's receipt, and the logs of the range in chunks, with a fixed number of requests in flight. Run by
// tests/cache_viem.rs (through Lasso with the response cache, and straight to the node) and by
// loadtest/scripts/indexer_pull.sh (the replayed indexer pull figure).
//
//   node viem_indexer.mjs build   LASSO_NODES=url[,url...] LASSO_BLOCKS=n [LASSO_GENESIS_TS=1700000000]
//       Builds the same chain on every node (anvil started with --no-mining and --timestamp LASSO_GENESIS_TS):
//       block 1 deploys the Tick contract (tests/client_matrix.rs), blocks 2..=n+1 hold 1 to 3 tick() calls each,
//       one Tick log per call. The same transactions (explicit nonce, gas and fees) go to every node and each block is
//       mined with `evm_mine` at a fixed timestamp, so the nodes hold one chain; checked at the end (same head hash).
//       Prints one JSON line: {"head", "hash", "contract", "txs"}.
//   node viem_indexer.mjs pull    LASSO_HTTP_URL=url LASSO_FROM=a LASSO_TO=b [LASSO_CONCURRENCY=8]
//                                 [LASSO_LOG_CHUNK=50] [LASSO_OUT=file] [LASSO_CLIENT=viem|fetch]
//       viem `http` transport (no batching, no retries): getBlock(includeTransactions) of every block in a..=b, then
//       getTransactionReceipt of each of its transactions (one worker per block), and getLogs over a..=b in chunks of
//       LASSO_LOG_CHUNK blocks; LASSO_CONCURRENCY workers. LASSO_CLIENT=fetch makes the same JSON-RPC calls with plain
//       `fetch` instead of viem (a lighter client, for figures). With LASSO_OUT, every call is written there, one JSON
//       line each, sorted: {"method","params","result","raw"}, where `raw` is the answer's bytes with its id set to 0.
//       Prints one JSON line: {"requests","blocks","txs","receipts","logs","ms","rps","client_cpu_ms"}.
// A failure prints `FAIL viem indexer <call>: <why>` and exits 1.

import { writeFileSync } from "node:fs";
import { createPublicClient, http } from "viem";
import { ACCOUNT0, CheckFailed, TICK_SELECTOR, calling, json, main } from "./common.mjs";

const client = "viem indexer";
const mode = process.argv[2];

// Init code of the Tick contract (tests/client_matrix.rs TICK_INIT_CODE).
const TICK_INIT_CODE =
  "0x602a60005560348060106000396000f3600054600101806000556000527fb8c95b3cea6303a753d912e243" +
  "354ef08add1085ed07d34191514ef1001ef9d860206000a100";
const BLOCK_SECONDS = 12;
// Fixed fees: every node signs the same bytes. 2 gwei covers anvil's base fee (1 gwei at genesis, falling after).
const FEES = { maxFeePerGas: "0x77359400", maxPriorityFeePerGas: "0x3b9aca00" };

function need(name) {
  const v = process.env[name];
  if (v === undefined || v === "") throw new CheckFailed(`FAIL ${client} setup: ${name} is not set`);
  return v;
}

const hex = (n) => `0x${n.toString(16)}`;

/** One JSON-RPC call with plain fetch (chain building only; the pull goes through viem). */
async function rpc(url, method, params) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CheckFailed(`FAIL ${client} build ${method} on ${url}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
  if (body.error || !("result" in body)) {
    throw new CheckFailed(`FAIL ${client} build ${method} on ${url}: ${json(body)}`);
  }
  return body.result;
}

async function build() {
  const nodes = need("LASSO_NODES").split(",");
  const blocks = Number(need("LASSO_BLOCKS"));
  const genesis = Number(process.env.LASSO_GENESIS_TS ?? "1700000000");
  let nonce = 0;
  let txs = 0;
  // Sends the same transactions to every node, then mines block `number` on each at its fixed timestamp.
  const block = async (number, txsOf) => {
    const sent = txsOf.map((tx) => ({ from: ACCOUNT0, ...FEES, ...tx, nonce: hex(nonce++) }));
    txs += sent.length;
    await Promise.all(
      nodes.map(async (url) => {
        await Promise.all(sent.map((tx) => rpc(url, "eth_sendTransaction", [tx])));
        await rpc(url, "evm_mine", [{ timestamp: genesis + number * BLOCK_SECONDS }]);
      }),
    );
  };
  await block(1, [{ data: TICK_INIT_CODE, gas: "0x30000" }]);
  const deployed = await rpc(nodes[0], "eth_getBlockByNumber", ["0x1", true]);
  const receipt = await rpc(nodes[0], "eth_getTransactionReceipt", [deployed.transactions[0].hash]);
  const contract = receipt.contractAddress;
  if (receipt.status !== "0x1" || !contract) throw new CheckFailed(`FAIL ${client} build deploy: ${json(receipt)}`);
  for (let n = 2; n <= blocks + 1; n++) {
    const calls = 1 + (n % 3);
    await block(n, Array.from({ length: calls }, () => ({ to: contract, data: TICK_SELECTOR, gas: "0x10000" })));
  }
  const heads = await Promise.all(nodes.map((url) => rpc(url, "eth_getBlockByNumber", ["latest", false])));
  for (const [i, h] of heads.entries()) {
    if (h.hash !== heads[0].hash || Number(h.number) !== blocks + 1 || h.transactions.length === 0) {
      throw new CheckFailed(`FAIL ${client} build: node ${nodes[i]} head ${h.number} ${h.hash}, node ${nodes[0]} ${heads[0].hash}`);
    }
  }
  const last = await rpc(nodes[0], "eth_getTransactionReceipt", [heads[0].transactions.at(-1)]);
  if (last.status !== "0x1" || last.logs.length !== 1) throw new CheckFailed(`FAIL ${client} build tick: ${json(last)}`);
  console.log(json({ head: blocks + 1, hash: heads[0].hash, contract, txs }));
}

/** viem's public actions (the client under test). */
function viemReader(url, fetchFn) {
  const pub = createPublicClient({ transport: http(url, { batch: false, retryCount: 0, timeout: 30_000, fetchFn }) });
  return {
    block: (n) => pub.getBlock({ blockNumber: BigInt(n), includeTransactions: true }),
    receipt: (hash) => pub.getTransactionReceipt({ hash }),
    logs: (from, to) => pub.getLogs({ fromBlock: BigInt(from), toBlock: BigInt(to) }),
  };
}

/** The same calls as plain `fetch` JSON-RPC (LASSO_CLIENT=fetch): a lighter client, for figures. */
function fetchReader(url, fetchFn) {
  let id = 0;
  const call = async (method, params) => {
    const res = await fetchFn(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params }),
    });
    const body = await res.json();
    if (body.error || !("result" in body)) throw new Error(`${method}: ${json(body)}`);
    return body.result;
  };
  return {
    block: async (n) => {
      const b = await call("eth_getBlockByNumber", [hex(n), true]);
      return { ...b, number: BigInt(b.number) };
    },
    receipt: (hash) => call("eth_getTransactionReceipt", [hash]),
    logs: (from, to) => call("eth_getLogs", [{ fromBlock: hex(from), toBlock: hex(to) }]),
  };
}

async function pull() {
  const url = need("LASSO_HTTP_URL");
  const from = Number(need("LASSO_FROM"));
  const to = Number(need("LASSO_TO"));
  const concurrency = Number(process.env.LASSO_CONCURRENCY ?? "8");
  const chunk = Number(process.env.LASSO_LOG_CHUNK ?? "50");
  const out = process.env.LASSO_OUT;
  const recorded = [];
  let requests = 0;
  // Counts every request viem sends and, with LASSO_OUT, keeps the exchange.
  const fetchFn = async (input, init) => {
    requests++;
    const res = await fetch(input, init);
    if (out) {
      const raw = await res.clone().text();
      recorded.push([init.body, raw]);
    }
    return res;
  };
  const reader = process.env.LASSO_CLIENT === "fetch" ? fetchReader(url, fetchFn) : viemReader(url, fetchFn);
  const counts = { blocks: 0, txs: 0, receipts: 0, logs: 0 };
  const jobs = [];
  for (let n = from; n <= to; n++) {
    jobs.push(async () => {
      const block = await calling(client, `getBlock ${n}`, () => reader.block(n));
      if (block.number !== BigInt(n)) throw new CheckFailed(`FAIL ${client} getBlock ${n}: got ${block.number}`);
      counts.blocks++;
      counts.txs += block.transactions.length;
      for (const tx of block.transactions) {
        const r = await calling(client, `getTransactionReceipt ${tx.hash}`, () => reader.receipt(tx.hash));
        if (r.blockHash !== block.hash) throw new CheckFailed(`FAIL ${client} receipt ${tx.hash}: block ${r.blockHash}`);
        counts.receipts++;
      }
    });
  }
  for (let start = from; start <= to; start += chunk) {
    const end = Math.min(start + chunk - 1, to);
    jobs.push(async () => {
      const logs = await calling(client, `getLogs ${start}..${end}`, () => reader.logs(start, end));
      counts.logs += logs.length;
    });
  }
  let next = 0;
  const started = performance.now();
  const cpuStart = process.cpuUsage();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs.length) await jobs[next++]();
    }),
  );
  const ms = performance.now() - started;
  const cpu = process.cpuUsage(cpuStart);
  if (out) {
    const lines = recorded.map(([body, raw]) => {
      const req = JSON.parse(body);
      const res = JSON.parse(raw);
      const key = json([req.method, req.params]);
      const normalized = raw.replace(`"id":${JSON.stringify(res.id)}`, '"id":0');
      return [key, json({ method: req.method, params: req.params, result: res.result, raw: normalized })];
    });
    lines.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    writeFileSync(out, lines.map(([, line]) => `${line}\n`).join(""));
  }
  const rps = Math.round((requests * 1000) / ms);
  const clientCpuMs = Math.round((cpu.user + cpu.system) / 1000);
  console.log(json({ requests, ...counts, ms: Math.round(ms), rps, client_cpu_ms: clientCpuMs }));
}

main(client, async () => {
  if (mode === "build") await build();
  else if (mode === "pull") await pull();
  else throw new CheckFailed(`FAIL ${client} usage: node viem_indexer.mjs build|pull (got ${mode})`);
});
