// GET /ticks: every indexed row, in chain order, numbers as decimal strings (what the test compares).
import { db } from "ponder:api";
import { tick } from "ponder:schema";
import { Hono } from "hono";
import { asc } from "ponder";

const app = new Hono();

app.get("/ticks", async (c) => {
  const rows = await db.select().from(tick).orderBy(asc(tick.blockNumber), asc(tick.logIndex));
  return c.json(
    rows.map((r) => ({
      blockNumber: r.blockNumber.toString(),
      logIndex: r.logIndex,
      txHash: r.txHash,
      value: r.value.toString(),
    })),
  );
});

export default app;
