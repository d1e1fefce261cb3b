// Ponder project of the client matrix (tests/client_matrix.rs `ponder_indexes_through_lasso_as_from_the_node`): indexes
// the Tick contract's events from the RPC URL it is given. The test runs it twice, once through Lasso and once straight
// at the node, each with a fresh PGlite directory, and compares the rows.
import { createConfig } from "ponder";

function need(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/client_matrix.rs sets it)`);
  return v;
}

export default createConfig({
  database: { kind: "pglite", directory: need("PONDER_PGLITE_DIR") },
  chains: {
    devnet: {
      id: Number(need("LASSO_CHAIN_ID")),
      rpc: need("PONDER_RPC_URL"),
      // No cache shared between the two runs: every row comes from the RPC URL of this run.
      disableCache: true,
      pollingInterval: 200,
    },
  },
  contracts: {
    Tick: {
      chain: "devnet",
      abi: [
        {
          type: "event",
          name: "Tick",
          inputs: [{ name: "count", type: "uint256", indexed: false }],
          anonymous: false,
        },
      ] as const,
      address: need("LASSO_CONTRACT") as `0x${string}`,
      startBlock: 0,
    },
  },
});
