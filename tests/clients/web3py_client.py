"""web3.py, unmodified (pinned in requirements.txt), through Lasso to anvil; run by tests/client_matrix.rs.

Usage: web3py_client.py http|ws. Environment: LASSO_HTTP_URL or LASSO_WS_URL, LASSO_CHAIN_ID, LASSO_CONTRACT (a Tick
contract: every call adds 1 to storage slot 0, starting at 42, and emits Tick(uint256 count) with the new value),
LASSO_TICKS (how many calls to make). Each check prints `ok web3.py <transport> <call>`; the first failure prints
`FAIL web3.py <transport> <call>: <why>` and exits 1.
"""

import asyncio
import os
import sys

from eth_account import Account
from web3 import AsyncWeb3, HTTPProvider, Web3, WebSocketProvider

ACCOUNT0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
# anvil dev account 1 (mnemonic "test test ... junk"): signs the transfer locally.
ACCOUNT1_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
TICK_SELECTOR = "0x3eaf5d9f"  # tick()
TICK_TOPIC = "0xb8c95b3cea6303a753d912e243354ef08add1085ed07d34191514ef1001ef9d8"  # Tick(uint256)
NOTIFICATION_TIMEOUT_S = 20

transport = sys.argv[1]
chain_id = int(os.environ["LASSO_CHAIN_ID"])
contract = Web3.to_checksum_address(os.environ["LASSO_CONTRACT"])
ticks = int(os.environ.get("LASSO_TICKS", "3"))


# The call being made: an exception raised by web3.py is reported against it.
current_call = "(start)"


def at(call):
    global current_call
    current_call = call


def fail(call, why):
    print(f"FAIL web3.py {transport} {call}: {why}", flush=True)
    sys.exit(1)


def expect(call, cond, why):
    if not cond:
        fail(call, why)
    print(f"ok web3.py {transport} {call}", flush=True)


def hx(b):
    return "0x" + bytes(b).hex()


def run_http():
    w3 = Web3(HTTPProvider(os.environ["LASSO_HTTP_URL"], request_kwargs={"timeout": 10}))
    try:
        at("eth_chainId")
        expect("eth_chainId", w3.eth.chain_id == chain_id, f"got {w3.eth.chain_id}")
        at("eth_blockNumber")
        head = w3.eth.block_number
        at("eth_getBlockByNumber")
        block = w3.eth.get_block(head)
        expect("eth_getBlockByNumber", block["number"] == head, f"asked {head}, got {block['number']}")
        at("eth_getCode")
        expect("eth_getCode", len(w3.eth.get_code(contract)) > 0, "no code at the contract")
        at("eth_getStorageAt")
        slot0 = int.from_bytes(w3.eth.get_storage_at(contract, 0), "big")
        at("eth_getBalance")
        balance = w3.eth.get_balance(ACCOUNT0)
        expect("eth_getBalance", balance > 0, "dev account 0 has no balance")

        at("batch_requests")
        with w3.batch_requests() as batch:
            batch.add(w3.eth.get_block(head))
            batch.add(w3.eth.get_balance(ACCOUNT0))
            batch.add(w3.eth.get_storage_at(contract, 0))
            batch.add(w3.eth.get_code(contract))
            answers = batch.execute()
        expect("batch of 4", len(answers) == 4, f"{len(answers)} answers")
        expect("batch eth_getBlockByNumber", answers[0]["hash"] == block["hash"], "another block than the single call")
        expect("batch eth_getBalance", answers[1] == balance, f"{answers[1]} != {balance}")
        expect("batch eth_getStorageAt", int.from_bytes(answers[2], "big") == slot0, f"{answers[2]!r}")
        expect("batch eth_getCode", answers[3] == w3.eth.get_code(contract), "another code than the single call")

        at("eth_sendTransaction + eth_getTransactionReceipt")
        hashes = [w3.eth.send_transaction({"from": ACCOUNT0, "to": contract, "data": TICK_SELECTOR}) for _ in range(ticks)]
        receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=20) for h in hashes]
        expect("eth_sendTransaction + eth_getTransactionReceipt", all(r["status"] == 1 for r in receipts), f"{receipts}")
        at("eth_getLogs")
        logs = w3.eth.get_logs({"address": contract, "fromBlock": receipts[0]["blockNumber"], "toBlock": receipts[-1]["blockNumber"]})
        counts = [int.from_bytes(bytes(l["data"]), "big") for l in logs]
        expect("eth_getLogs", counts == list(range(slot0 + 1, slot0 + 1 + ticks)), f"counts {counts}, slot 0 was {slot0}")
    except Exception as e:  # noqa: BLE001 - any client error is a matrix failure
        fail(current_call, repr(e))


async def next_notifications(w3, want, call):
    """Reads subscription messages until `want(messages)` holds; the messages, by subscription id."""
    got = {}
    try:
        async with asyncio.timeout(NOTIFICATION_TIMEOUT_S):
            async for msg in w3.socket.process_subscriptions():
                got.setdefault(msg["subscription"], []).append(msg["result"])
                if want(got):
                    return got
    except TimeoutError:
        fail(call, f"not all notifications within {NOTIFICATION_TIMEOUT_S}s; got {got}")
    fail(call, f"subscription stream ended; got {got}")


async def run_ws():
    try:
        at("connect")
        async with AsyncWeb3(WebSocketProvider(os.environ["LASSO_WS_URL"])) as w3:
            at("eth_chainId")
            expect("eth_chainId", await w3.eth.chain_id == chain_id, "wrong chain id")
            at("eth_blockNumber")
            start = await w3.eth.block_number
            at("eth_getStorageAt")
            slot0 = int.from_bytes(await w3.eth.get_storage_at(contract, 0), "big")
            at("eth_subscribe")
            heads_id = await w3.eth.subscribe("newHeads")
            logs_id = await w3.eth.subscribe("logs", {"address": contract})
            expect("eth_subscribe newHeads + logs", heads_id != logs_id, "same id twice")

            # Ticks (one block and one log each), then a transfer signed here (one more block, no log).
            at("eth_sendTransaction + eth_getTransactionReceipt")
            tick_receipts = []
            for _ in range(ticks):
                h = await w3.eth.send_transaction({"from": ACCOUNT0, "to": contract, "data": TICK_SELECTOR})
                tick_receipts.append(await w3.eth.wait_for_transaction_receipt(h, timeout=20))
            at("eth_sendRawTransaction + eth_getTransactionReceipt")
            sender = Account.from_key(ACCOUNT1_KEY)
            tx = {
                "to": ACCOUNT0,
                "value": 10**15,
                "nonce": await w3.eth.get_transaction_count(sender.address),
                "gas": 21000,
                "maxFeePerGas": 2 * 10**10,
                "maxPriorityFeePerGas": 10**9,
                "chainId": chain_id,
            }
            signed = sender.sign_transaction(tx)
            sent = await w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = await w3.eth.wait_for_transaction_receipt(sent, timeout=20)
            expect("eth_sendRawTransaction + eth_getTransactionReceipt",
                   receipt["status"] == 1 and hx(receipt["transactionHash"]) == hx(signed.hash),
                   f"{receipt}")
            last = receipt["blockNumber"]

            def complete(got):
                heads = got.get(heads_id, [])
                return len(got.get(logs_id, [])) >= ticks and heads and heads[-1]["number"] >= last

            got = await next_notifications(w3, complete, "newHeads/logs notifications")
            heads = got[heads_id]
            numbers = [h["number"] for h in heads]
            expect("newHeads: every block mined while subscribed, in order",
                   numbers == list(range(start + 1, last + 1)), f"blocks {numbers}, want {start + 1}..{last}")
            at("eth_getBlockByNumber")
            for h in heads:
                block = await w3.eth.get_block(h["number"])
                if hx(block["hash"]) != hx(h["hash"]):
                    fail("newHeads hash", f"block {h['number']}: head {hx(h['hash'])}, chain {hx(block['hash'])}")
            print(f"ok web3.py {transport} newHeads hashes match eth_getBlockByNumber", flush=True)
            logs = got[logs_id]
            counts = [int.from_bytes(bytes(l["data"]), "big") for l in logs]
            expect("logs: every Tick in order", counts == list(range(slot0 + 1, slot0 + 1 + ticks)),
                   f"counts {counts}, slot 0 was {slot0}")
            expect("logs: in the ticks' blocks",
                   [l["blockNumber"] for l in logs] == [r["blockNumber"] for r in tick_receipts]
                   and all(hx(l["topics"][0]) == TICK_TOPIC for l in logs),
                   f"{logs}")

            at("eth_unsubscribe")
            expect("eth_unsubscribe newHeads", await w3.eth.unsubscribe(heads_id) is True, "not true")
            expect("eth_unsubscribe logs", await w3.eth.unsubscribe(logs_id) is True, "not true")
            again = await w3.provider.make_request("eth_unsubscribe", [heads_id])
            expect("eth_unsubscribe of a closed subscription", again.get("result") is False, f"{again}")
            # A fresh subscription sees the next block; nothing arrives for the closed ones meanwhile.
            at("eth_subscribe after eth_unsubscribe")
            fresh_id = await w3.eth.subscribe("newHeads")
            h = await w3.eth.send_transaction({"from": ACCOUNT0, "to": contract, "data": TICK_SELECTOR})
            tick = await w3.eth.wait_for_transaction_receipt(h, timeout=20)
            got = await next_notifications(
                w3, lambda g: any(x["number"] >= tick["blockNumber"] for x in g.get(fresh_id, [])), "newHeads after unsubscribe")
            expect("no notification after eth_unsubscribe", set(got) == {fresh_id}, f"got {sorted(got)}")
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any client error is a matrix failure
        fail(current_call, repr(e))


if transport == "http":
    run_http()
elif transport == "ws":
    asyncio.run(run_ws())
else:
    fail("(usage)", f"unknown transport {transport!r}")
print(f"web3.py {transport}: all checks passed", flush=True)
