// One row per Tick event.
import { onchainTable } from "ponder";

export const tick = onchainTable("tick", (t) => ({
  id: t.text().primaryKey(),
  blockNumber: t.bigint().notNull(),
  logIndex: t.integer().notNull(),
  txHash: t.hex().notNull(),
  value: t.bigint().notNull(),
}));
