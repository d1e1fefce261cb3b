#!/usr/bin/env node
// Idempotent provisioning of Lasso on Fly.io Machines: app, public IPs, secrets, and per region in REGIONS a volume
// plus a Machine for each of MACHINE_COUNT. Re-running creates only what is missing (a new region, a lost Machine);
// it never updates or removes running Machines (deploys are roll.mjs). See deployment/README.md.
//
//   FLY_API_TOKEN=... FLY_APP_NAME=lasso-prod IMAGE_REF=registry.fly.io/lasso-prod:v1 REGIONS=iad,sea \
//     node deployment/provision.mjs
//   node deployment/provision.mjs --print-config    # the Machine config, as JSON, without calling the API
//
// Env: FLY_ORG (personal), MACHINE_COUNT (2), VOLUME_SIZE_GB (3), VM_CPU_KIND/VM_CPUS/VM_MEMORY_MB
// (performance/2/4096), SECRET_NAMES (default: SECRET_KEY_BASE and every *_API_KEY in env), ROTATE_SECRETS=1 (set
// secrets that already exist too), HEALTH_TIMEOUT_S (180), POLL_INTERVAL_MS (2000), FLY_API_BASE, FLY_GRAPHQL_URL.
import {
  DeployError,
  Fly,
  VOLUME_NAME,
  createMachine,
  isLive,
  isLiveVolume,
  isManaged,
  log,
  machineConfig,
  required,
  run,
  settings,
  waitHealthy,
  waitState,
} from "./lib/fly.mjs";

const SECRETS_QUERY = `query($name: String!) { app(name: $name) { secrets { name } } }`;
const SET_SECRETS = `mutation($input: SetSecretsInput!) { setSecrets(input: $input) { release { version } } }`;
const IPS_QUERY = `query($name: String!) { app(name: $name) { ipAddresses { nodes { address type } } } }`;
const ALLOCATE_IP = `mutation($input: AllocateIPAddressInput!) {
  allocateIpAddress(input: $input) { ipAddress { address type } } }`;

async function main() {
  const env = process.env;
  const s = settings(env);
  if (process.argv.includes("--print-config")) {
    process.stdout.write(`${JSON.stringify(machineConfig({ ...s, image: s.image || "IMAGE_REF" }, "vol_ID"), null, 2)}\n`);
    return;
  }
  required(env, "FLY_APP_NAME");
  required(env, "IMAGE_REF");
  if (s.regions.length === 0) throw new DeployError("REGIONS is required (comma-separated, e.g. iad,sea)");
  if (s.machineCount < 2) log(`warning: MACHINE_COUNT=${s.machineCount}: a region with one Machine is down during its restarts`);
  const fly = new Fly({ token: env.FLY_API_TOKEN, app: s.app, env, requestTimeoutMs: s.requestTimeoutMs, retries: s.retries });

  if (await fly.getApp()) {
    log(`app ${s.app} exists`);
  } else {
    await fly.createApp(s.org);
    log(`created app ${s.app} in org ${s.org}`);
  }
  await ensureIps(fly, s);
  await ensureSecrets(fly, s, env);

  const machines = (await fly.listMachines()).filter((m) => isManaged(m) && isLive(m));
  const volumes = (await fly.listVolumes()).filter(isLiveVolume);
  const created = [];
  for (const region of s.regions) {
    created.push(...(await ensureRegion(fly, s, region, machines, volumes)));
  }
  // Verify every Lasso Machine in REGIONS, new or not, so a re-run after a failure does not report success.
  const wait = { timeoutMs: s.healthTimeoutMs, pollMs: s.pollMs };
  for (const m of [...created, ...machines.filter((x) => s.regions.includes(x.region))]) {
    if (created.includes(m)) await waitState(fly, m.id, "started", m.instance_id, wait);
    await waitHealthy(fly, m.id, wait);
  }
  log(`done: ${created.length} Machine(s) created; every Machine in ${s.regions.join(", ")} is healthy`);
}

async function ensureIps(fly, s) {
  const data = await fly.graphql(IPS_QUERY, { name: s.app });
  const have = new Set((data?.app?.ipAddresses?.nodes ?? []).map((ip) => ip.type));
  for (const type of ["v6", "shared_v4"]) {
    if (have.has(type) || (type === "shared_v4" && have.has("v4"))) continue;
    const res = await fly.graphql(ALLOCATE_IP, { input: { appId: s.app, type } });
    log(`allocated ${type} address ${res?.allocateIpAddress?.ipAddress?.address ?? ""}`);
  }
}

async function ensureSecrets(fly, s, env) {
  const names = s.secretNames.length
    ? s.secretNames
    : Object.keys(env)
        .filter((k) => k === "SECRET_KEY_BASE" || /^[A-Z][A-Z0-9_]*_API_KEY$/.test(k))
        .sort();
  const missing = names.filter((n) => !env[n]);
  if (missing.length) throw new DeployError(`SECRET_NAMES lists unset variables: ${missing.join(", ")}`);
  if (names.length === 0) return;
  const data = await fly.graphql(SECRETS_QUERY, { name: s.app });
  const existing = new Set((data?.app?.secrets ?? []).map((x) => x.name));
  const toSet = s.rotateSecrets ? names : names.filter((n) => !existing.has(n));
  if (toSet.length === 0) {
    log(`secrets up to date (${names.length}); ROTATE_SECRETS=1 to overwrite`);
    return;
  }
  const secrets = toSet.map((key) => ({ key, value: env[key] }));
  await fly.graphql(SET_SECRETS, { input: { appId: s.app, secrets, replaceAll: false } });
  log(`set secrets: ${toSet.join(", ")} (running Machines see new values after a restart or roll.mjs)`);
}

async function ensureRegion(fly, s, region, machines, volumes) {
  const live = machines.filter((m) => m.region === region);
  const missing = s.machineCount - live.length;
  if (live.length > s.machineCount) {
    log(`${region}: ${live.length} Machines, more than MACHINE_COUNT=${s.machineCount}; provision.mjs never removes any`);
  }
  if (missing <= 0) {
    log(`${region}: ${live.length} Machine(s), nothing to create`);
    return [];
  }
  const free = volumes.filter((v) => v.region === region && v.name === VOLUME_NAME && !v.attached_machine_id);
  const created = [];
  for (let i = 0; i < missing; i++) {
    let volume = free.shift();
    if (volume) {
      log(`${region}: reusing unattached volume ${volume.id}`);
    } else {
      // require_unique_zone puts a region's volumes (and so its Machines) on different hosts.
      volume = await fly.createVolume({ name: VOLUME_NAME, region, size_gb: s.volumeSizeGb, require_unique_zone: true });
      log(`${region}: created volume ${volume.id} (${s.volumeSizeGb} GB)`);
    }
    const m = await createMachine(fly, { region, config: machineConfig(s, volume.id) });
    log(`${region}: created Machine ${m.id} on ${volume.id}`);
    created.push(m);
  }
  return created;
}

await run(main);
