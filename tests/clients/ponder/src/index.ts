// The indexing function: every Tick event becomes a row.
import { ponder } from "ponder:registry";
import { tick } from "ponder:schema";

ponder.on("Tick:Tick", async ({ event, context }) => {
  await context.db.insert(tick).values({
    id: event.id,
    blockNumber: event.block.number,
    logIndex: event.log.logIndex,
    txHash: event.transaction.hash,
    value: event.args.count,
  });
});
