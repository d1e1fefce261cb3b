// Runs a deployment script as a child process against the mock Fly API, with fast polls and short timeouts.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export function runScript(script, mock, env = {}, args = []) {
  const childEnv = {
    PATH: process.env.PATH,
    ...mock.env,
    FLY_APP_NAME: "lasso-test",
    POLL_INTERVAL_MS: "10",
    HEALTH_TIMEOUT_S: "1",
    STOP_TIMEOUT_S: "1",
    DRAIN_WAIT_S: "0",
    ...env,
  };
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(ROOT, "deployment", script), ...args],
      { env: childEnv, cwd: ROOT, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

export const provision = (mock, env) => runScript("provision.mjs", mock, { IMAGE_REF: "registry.fly.io/lasso-test:v1", ...env });
export const roll = (mock, env) => runScript("roll.mjs", mock, env);
