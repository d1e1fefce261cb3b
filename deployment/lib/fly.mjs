// Shared pieces of provision.mjs and roll.mjs: settings from env, a small Fly API client (Machines REST + GraphQL)
// with bounded retries and timeouts, and the Machine config Lasso runs with. Node >= 20, standard library only.
import { randomBytes } from "node:crypto";

export const DATA_PATH = "/data";
export const INTERNAL_PORT = 4000;
export const VOLUME_NAME = "lasso_data"; // one name in every region, as fly.toml's [[mounts]] source
export const MANAGED = { key: "lasso_managed", value: "true" };

export class DeployError extends Error {}

const DEFAULT_API = "https://api.machines.dev/v1";
const DEFAULT_GRAPHQL = "https://api.fly.io/graphql";

export function log(msg) {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function intEnv(env, name, fallback, min = 0) {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new DeployError(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

function listEnv(env, name) {
  return (env[name] ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

export function required(env, name) {
  const v = env[name];
  if (!v) throw new DeployError(`${name} is required`);
  return v;
}

/** Settings common to both scripts. Durations in env are seconds; internally milliseconds. */
export function settings(env = process.env) {
  const regions = listEnv(env, "REGIONS");
  for (const r of regions) {
    if (!/^[a-z]{3}$/.test(r)) throw new DeployError(`REGIONS: ${JSON.stringify(r)} is not a Fly region code (e.g. iad)`);
  }
  return {
    app: env.FLY_APP_NAME ?? "",
    org: env.FLY_ORG || "personal",
    image: env.IMAGE_REF ?? "",
    regions,
    machineCount: intEnv(env, "MACHINE_COUNT", 2, 1),
    volumeSizeGb: intEnv(env, "VOLUME_SIZE_GB", 3, 1),
    cpuKind: env.VM_CPU_KIND || "performance",
    cpus: intEnv(env, "VM_CPUS", 2, 1),
    memoryMb: intEnv(env, "VM_MEMORY_MB", 4096, 256),
    healthTimeoutMs: intEnv(env, "HEALTH_TIMEOUT_S", 180, 1) * 1000,
    stopTimeoutMs: intEnv(env, "STOP_TIMEOUT_S", 60, 1) * 1000,
    drainWaitMs: intEnv(env, "DRAIN_WAIT_S", 5, 0) * 1000,
    pollMs: intEnv(env, "POLL_INTERVAL_MS", 2000, 1),
    requestTimeoutMs: intEnv(env, "REQUEST_TIMEOUT_S", 30, 1) * 1000,
    retries: intEnv(env, "API_RETRIES", 4, 0),
    keepOldVolumes: env.KEEP_OLD_VOLUMES === "1",
    rotateSecrets: env.ROTATE_SECRETS === "1",
    secretNames: listEnv(env, "SECRET_NAMES"),
  };
}

export class HttpError extends DeployError {
  constructor(method, url, status, body) {
    super(`${method} ${url} -> HTTP ${status}: ${String(body).slice(0, 500)}`);
    this.status = status;
    this.body = body;
  }
}

/** Fly API client. Retries network errors, 429 and 5xx with backoff; every request is bounded by a timeout. */
export class Fly {
  constructor({ token, app, env = process.env, requestTimeoutMs = 30000, retries = 4 }) {
    if (!token) throw new DeployError("FLY_API_TOKEN is required");
    this.token = token;
    this.app = app;
    this.api = (env.FLY_API_BASE || DEFAULT_API).replace(/\/+$/, "");
    this.graphqlUrl = env.FLY_GRAPHQL_URL || DEFAULT_GRAPHQL;
    this.requestTimeoutMs = requestTimeoutMs;
    this.retries = retries;
  }

  async request(method, url, body, { okStatuses = [] } = {}) {
    for (let attempt = 0; ; attempt++) {
      let res;
      let text;
      try {
        res = await fetch(url, {
          method,
          headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.requestTimeoutMs),
        });
        text = await res.text();
      } catch (err) {
        if (attempt >= this.retries) throw new DeployError(`${method} ${url} failed: ${err.message}`);
        log(`${method} ${url}: ${err.message}; retrying`);
        await sleep(backoff(attempt));
        continue;
      }
      if (res.ok || okStatuses.includes(res.status)) {
        return { status: res.status, data: text ? parseJson(text, url) : null };
      }
      if ((res.status === 429 || res.status >= 500) && attempt < this.retries) {
        log(`${method} ${url} -> HTTP ${res.status}; retrying`);
        await sleep(backoff(attempt));
        continue;
      }
      throw new HttpError(method, url, res.status, text);
    }
  }

  appPath(path = "") {
    return `${this.api}/apps/${encodeURIComponent(this.app)}${path}`;
  }

  async getApp() {
    const { status, data } = await this.request("GET", this.appPath(), undefined, { okStatuses: [404] });
    return status === 404 ? null : data;
  }

  createApp(org) {
    return this.request("POST", `${this.api}/apps`, { app_name: this.app, org_slug: org });
  }

  async listMachines() {
    return (await this.request("GET", this.appPath("/machines"))).data ?? [];
  }

  async getMachine(id) {
    return (await this.request("GET", this.appPath(`/machines/${id}`))).data;
  }

  async createMachine(body) {
    return (await this.request("POST", this.appPath("/machines"), body)).data;
  }

  /** Waits (server side, at most 60 s per call) for a state; resolves false on the API's 408 timeout. */
  async waitState(id, state, timeoutS, instanceId) {
    const q = new URLSearchParams({ state, timeout: String(Math.max(1, Math.min(60, timeoutS))) });
    if (instanceId) q.set("instance_id", instanceId);
    const { status } = await this.request("GET", this.appPath(`/machines/${id}/wait?${q}`), undefined, {
      okStatuses: [408],
    });
    return status !== 408;
  }

  stopMachine(id, signal = "SIGINT", timeout = "30s") {
    return this.request("POST", this.appPath(`/machines/${id}/stop`), { signal, timeout });
  }

  setMetadata(id, key, value) {
    return this.request("POST", this.appPath(`/machines/${id}/metadata/${encodeURIComponent(key)}`), { value });
  }

  cordon(id) {
    return this.request("POST", this.appPath(`/machines/${id}/cordon`));
  }

  uncordon(id) {
    return this.request("POST", this.appPath(`/machines/${id}/uncordon`));
  }

  destroyMachine(id, force = false) {
    return this.request("DELETE", this.appPath(`/machines/${id}${force ? "?force=true" : ""}`), undefined, {
      okStatuses: [404],
    });
  }

  async listVolumes() {
    return (await this.request("GET", this.appPath("/volumes"))).data ?? [];
  }

  async createVolume(body) {
    return (await this.request("POST", this.appPath("/volumes"), body)).data;
  }

  deleteVolume(id) {
    return this.request("DELETE", this.appPath(`/volumes/${id}`), undefined, { okStatuses: [404] });
  }

  async graphql(query, variables) {
    const { data } = await this.request("POST", this.graphqlUrl, { query, variables });
    if (data?.errors?.length) throw new DeployError(`GraphQL: ${data.errors.map((e) => e.message).join("; ")}`);
    return data?.data;
  }
}

function backoff(attempt) {
  return Math.min(200 * 2 ** attempt, 5000);
}

function parseJson(text, url) {
  try {
    return JSON.parse(text);
  } catch {
    throw new DeployError(`${url}: response is not JSON: ${text.slice(0, 200)}`);
  }
}

export const isManaged = (m) => m?.config?.metadata?.[MANAGED.key] === MANAGED.value;
export const isLive = (m) => !["destroyed", "destroying"].includes(m.state);
export const isLiveVolume = (v) => !["destroyed", "destroying", "pending_destroy", "scheduling_destroy"].includes(v.state);

/**
 * The Machine config Lasso runs with. Kept in step with fly.toml (tests/deployment_files.rs compares them):
 * services on 80/443 with WS-friendly connection-based concurrency, health checks on /api/health, SIGINT with
 * 30 s to drain, always on (no autostop: warm pools), the volume at /data.
 */
export function machineConfig(s, volumeId) {
  const healthCheck = {
    type: "http",
    port: INTERNAL_PORT,
    method: "GET",
    path: "/api/health",
    interval: "10s",
    timeout: "2s",
    grace_period: "10s",
  };
  return {
    image: s.image,
    guest: { cpu_kind: s.cpuKind, cpus: s.cpus, memory_mb: s.memoryMb },
    env: {
      PORT: String(INTERNAL_PORT),
      LOG_FORMAT: "json",
      LASSO_CHAINS_PATH: `${DATA_PATH}/chains.yml`,
      LASSO_SNAPSHOTS_DIR: `${DATA_PATH}/benchmark_snapshots`,
      LASSO_BACKUP_DIR: `${DATA_PATH}/config_backups`,
    },
    mounts: [{ volume: volumeId, path: DATA_PATH }],
    services: [
      {
        protocol: "tcp",
        internal_port: INTERNAL_PORT,
        autostop: "off",
        autostart: false,
        ports: [
          { port: 80, handlers: ["http"] },
          { port: 443, handlers: ["tls", "http"] },
        ],
        // From deployment/SIZING.md; equal to Lasso's own server.soft/hard_max_connections defaults.
        concurrency: { type: "connections", soft_limit: 500, hard_limit: 1000 },
        checks: [healthCheck],
      },
    ],
    checks: { health: healthCheck },
    stop_config: { signal: "SIGINT", timeout: "30s" },
    restart: { policy: "always" },
    auto_destroy: false,
    metadata: { fly_platform_version: "v2", fly_process_group: "app", [MANAGED.key]: MANAGED.value },
  };
}

/**
 * Polls the Machine until its health checks pass, bounded by timeoutMs. The checks that count are the Machine-level
 * ones (config.checks, run even while the Machine is cordoned); without any, every reported check counts.
 */
export async function waitHealthy(fly, id, { timeoutMs, pollMs }) {
  const deadline = Date.now() + timeoutMs;
  let last = "no checks reported yet";
  for (;;) {
    const m = await fly.getMachine(id);
    if (["stopped", "destroyed", "failed"].includes(m?.state)) {
      throw new DeployError(`Machine ${id} is ${m.state} while waiting for health checks`);
    }
    const names = Object.keys(m?.config?.checks ?? {});
    const checks = (m?.checks ?? []).filter((c) => names.length === 0 || names.includes(c.name));
    const ready = checks.length > 0 && (names.length === 0 || checks.length >= names.length);
    if (m?.state === "started" && ready && checks.every((c) => c.status === "passing")) return m;
    if (checks.length > 0) last = checks.map((c) => `${c.name}=${c.status}${c.output ? ` (${c.output})` : ""}`).join(", ");
    if (Date.now() >= deadline) {
      throw new DeployError(`Machine ${id} did not become healthy within ${timeoutMs / 1000}s: ${last}`);
    }
    await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
  }
}

/** Waits for a Machine to reach `state` (started, stopped), bounded by timeoutMs. */
export async function waitState(fly, id, state, instanceId, { timeoutMs, pollMs }) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const left = Math.ceil((deadline - Date.now()) / 1000);
    if (await fly.waitState(id, state, left, instanceId)) return;
    await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
  }
  throw new DeployError(`Machine ${id} did not reach state ${state} within ${timeoutMs / 1000}s`);
}

/**
 * Creates a Machine under a fresh unique name. When a retried POST fails because its first attempt did reach Fly (the
 * name is taken), the Machine is looked up by name instead of being created twice.
 */
export async function createMachine(fly, body) {
  const name = `lasso-${body.region}-${randomBytes(4).toString("hex")}`;
  try {
    return await fly.createMachine({ name, ...body });
  } catch (err) {
    if (!(err instanceof HttpError) || err.status >= 500) throw err;
    const existing = (await fly.listMachines()).find((m) => m.name === name);
    if (!existing) throw err;
    return existing;
  }
}

/** Runs main, turning errors into one clear line and a non-zero exit. */
export async function run(main) {
  try {
    await main();
  } catch (err) {
    const msg = err instanceof DeployError ? err.message : err?.stack || String(err);
    process.stderr.write(`error: ${msg}\n`);
    process.exitCode = 1;
  }
}
