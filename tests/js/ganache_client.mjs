// Real Ethereum clients (ethers v6 and viem, unchanged) talking to ganache *through Lasso*.
//
// Usage: LASSO_URL=http://127.0.0.1:PORT/rpc/priority/devnet node tests/js/ganache_client.mjs
// Optional: LASSO_CHAIN_ID (default 1337), LASSO_JS_TIMEOUT_MS (default 60000).
//
// Driven by tests/ganache.rs, which starts two ganache nodes (--wallet.deterministic) and Lasso in front of them.
// Exits 0 when every check passes; otherwise prints `FAIL: <what>` to stderr and exits 1.

import { JsonRpcProvider, Transaction, Wallet, formatEther, parseEther } from "ethers";
import { createPublicClient, http } from "viem";

// ganache --wallet.deterministic: account 0 and its key (mnemonic "myth like bonus scare over problem client lizard
// pioneer submit female collect").
const ACCOUNT0 = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";
const ACCOUNT0_KEY = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";

const url = process.env.LASSO_URL;
const expectedChainId = BigInt(process.env.LASSO_CHAIN_ID ?? "1337");
const timeoutMs = Number(process.env.LASSO_JS_TIMEOUT_MS ?? "60000");

class CheckFailed extends Error {}

function fail(msg) {
  throw new CheckFailed(msg);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

function step(msg) {
  console.log(`[ganache_client] ${msg}`);
}

function json(v) {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));
}

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

async function rawBatch() {
  // Deliberately mixed id types and a non-sorted order: the proxy must answer in request order with the client's ids.
  const batch = [
    { jsonrpc: "2.0", id: 303, method: "eth_getBalance", params: [ACCOUNT0, "latest"] },
    { jsonrpc: "2.0", id: "two", method: "eth_blockNumber", params: [] },
    { jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] },
  ];
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(batch),
  });
  const text = await res.text();
  check(res.status === 200, `batch: HTTP ${res.status} (want 200), body: ${text}`);
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    fail(`batch: response is not JSON: ${text}`);
  }
  check(Array.isArray(body), `batch: response is not an array: ${text}`);
  check(body.length === batch.length, `batch: ${body.length} responses for ${batch.length} calls: ${text}`);
  body.forEach((r, i) => {
    check(r && r.jsonrpc === "2.0", `batch[${i}]: missing jsonrpc "2.0": ${json(r)}`);
    check(r.id === batch[i].id, `batch[${i}]: id ${json(r.id)} (want ${json(batch[i].id)}; order or id broken): ${text}`);
    check(r.error === undefined, `batch[${i}] (${batch[i].method}): error ${json(r.error)}`);
    check(typeof r.result === "string" && /^0x[0-9a-f]+$/i.test(r.result), `batch[${i}]: bad result ${json(r)}`);
  });
  check(BigInt(body[2].result) === expectedChainId, `batch: eth_chainId ${body[2].result} (want ${expectedChainId})`);
  check(BigInt(body[0].result) > 0n, `batch: balance of ${ACCOUNT0} is ${body[0].result}, want > 0`);
  return body;
}

async function waitForReceipt(provider, hash, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const receipt = await provider.getTransactionReceipt(hash);
    if (receipt !== null) return receipt;
    if (Date.now() > deadline) fail(`no receipt for ${hash} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  if (!url) fail("LASSO_URL is not set (e.g. http://127.0.0.1:4000/rpc/priority/devnet)");
  step(`LASSO_URL=${url} expected chain id ${expectedChainId}`);

  // ---- ethers v6, stock JsonRpcProvider --------------------------------------------------------------------------
  const provider = new JsonRpcProvider(url);

  const blockBefore = await provider.getBlockNumber();
  check(Number.isInteger(blockBefore) && blockBefore >= 0, `ethers getBlockNumber: ${blockBefore}`);
  step(`ethers: block number ${blockBefore}`);

  const network = await provider.getNetwork();
  check(network.chainId === expectedChainId, `ethers getNetwork().chainId = ${network.chainId}, want ${expectedChainId}`);
  const rawChainId = await provider.send("eth_chainId", []);
  check(BigInt(rawChainId) === expectedChainId, `eth_chainId = ${rawChainId}, want ${expectedChainId}`);
  step(`ethers: chain id ${network.chainId}`);

  const balance0 = await provider.getBalance(ACCOUNT0);
  check(balance0 > parseEther("1"), `balance of ${ACCOUNT0} = ${formatEther(balance0)} ETH, want > 1 (deterministic ganache)`);
  step(`ethers: balance of ${ACCOUNT0} = ${formatEther(balance0)} ETH`);

  // ---- raw JSON-RPC batch ----------------------------------------------------------------------------------------
  const batch = await rawBatch();
  step(`batch: 3 answers in order with ids ${batch.map((r) => json(r.id)).join(", ")}`);

  // ---- signed transfer via eth_sendRawTransaction ----------------------------------------------------------------
  const wallet = new Wallet(ACCOUNT0_KEY, provider);
  check(wallet.address === ACCOUNT0, `deterministic key gives ${wallet.address}, want ${ACCOUNT0}`);
  const recipient = Wallet.createRandom().address; // fresh address: starts at 0
  const value = parseEther("0.25");
  const recipientBefore = await provider.getBalance(recipient);

  // populateTransaction asks the node (through Lasso) for nonce, gas and EIP-1559 fees.
  const txReq = await wallet.populateTransaction({ to: recipient, value, type: 2 });
  check(txReq.chainId === expectedChainId, `populated tx chainId ${txReq.chainId}, want ${expectedChainId}`);
  const signed = await wallet.signTransaction(txReq);
  const expectedHash = Transaction.from(signed).hash;
  const sentHash = await provider.send("eth_sendRawTransaction", [signed]);
  check(
    typeof sentHash === "string" && sentHash.toLowerCase() === expectedHash.toLowerCase(),
    `eth_sendRawTransaction returned ${json(sentHash)}, want ${expectedHash}`,
  );
  step(`sent EIP-1559 transfer of ${formatEther(value)} ETH to ${recipient}: ${sentHash}`);

  // Wait for the receipt by polling eth_getTransactionReceipt (bounded). Not provider.waitForTransaction(hash, 1):
  // with ganache's instamine no further block ever arrives, and ethers' 250 ms request cache can hand that method a
  // stale block number, after which it waits for a "block" event forever.
  const receipt = await waitForReceipt(provider, sentHash, 30_000);
  check(receipt.status === 1, `receipt status ${receipt.status}, want 1: ${json(receipt)}`);
  check(receipt.hash.toLowerCase() === sentHash.toLowerCase(), `receipt hash ${receipt.hash}, want ${sentHash}`);
  const receipt2 = await provider.getTransactionReceipt(sentHash);
  check(receipt2 !== null && receipt2.status === 1, `getTransactionReceipt: ${json(receipt2)}`);
  check(receipt2.blockNumber > blockBefore, `receipt block ${receipt2.blockNumber}, want > ${blockBefore}`);
  step(`receipt: status ${receipt2.status}, block ${receipt2.blockNumber}, gas used ${receipt2.gasUsed}`);

  // Ask at the receipt's block explicitly: ethers caches identical requests for 250 ms (AbstractProvider cacheTimeout),
  // so a second plain getBalance(recipient) right after the first could be answered from that cache.
  const recipientAfter = await provider.getBalance(recipient, receipt2.blockNumber);
  check(
    recipientAfter === recipientBefore + value,
    `recipient balance ${formatEther(recipientAfter)} ETH, want ${formatEther(recipientBefore + value)} ETH`,
  );
  const blockAfter = Number(await provider.send("eth_blockNumber", []));
  check(blockAfter > blockBefore, `block number did not advance: ${blockBefore} -> ${blockAfter}`);
  step(`recipient balance ${formatEther(recipientBefore)} -> ${formatEther(recipientAfter)} ETH; block ${blockAfter}`);
  provider.destroy();

  // ---- viem public client ----------------------------------------------------------------------------------------
  const client = createPublicClient({ transport: http(url, { retryCount: 0, timeout: 10_000 }) });
  const viemBlock = await client.getBlockNumber({ cacheTime: 0 });
  check(viemBlock >= BigInt(blockAfter), `viem getBlockNumber ${viemBlock}, want >= ${blockAfter}`);
  const viemChainId = await client.getChainId();
  check(BigInt(viemChainId) === expectedChainId, `viem getChainId ${viemChainId}, want ${expectedChainId}`);
  step(`viem: block number ${viemBlock}, chain id ${viemChainId}`);
}

try {
  await withTimeout(main(), timeoutMs, "ganache_client");
  console.log("[ganache_client] OK: all checks passed");
  process.exit(0);
} catch (e) {
  if (e instanceof CheckFailed) {
    console.error(`[ganache_client] FAIL: ${e.message}`);
  } else {
    console.error(`[ganache_client] FAIL: unexpected error: ${e?.stack ?? e}`);
  }
  process.exit(1);
}
