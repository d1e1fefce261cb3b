// deployment/provision.mjs against the mock Fly API: full bring-up, idempotent re-run, region expansion, retries,
// bounded health waits and input errors.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startMockFly } from "./mock-fly.mjs";
import { provision, runScript } from "./helpers.mjs";

const APP = "lasso-test";
let mock;
beforeEach(async () => {
  mock = await startMockFly();
});
afterEach(() => mock.close());

const ok = (r) => assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}`);
const byRegion = (items) =>
  items.reduce((acc, x) => ({ ...acc, [x.region]: (acc[x.region] ?? 0) + 1 }), {});

test("fresh provision creates the app, IPs, secrets, and per region a volume and Machine per MACHINE_COUNT", async () => {
  const r = await provision(mock, {
    REGIONS: "iad,sea",
    MACHINE_COUNT: "2",
    ALCHEMY_API_KEY: "alchemy-secret",
    SECRET_KEY_BASE: "skb",
  });
  ok(r);
  const app = mock.state.apps.get(APP);
  assert.equal(app.org, "personal");
  assert.deepEqual(Object.fromEntries(app.secrets), { ALCHEMY_API_KEY: "alchemy-secret", SECRET_KEY_BASE: "skb" });
  assert.deepEqual(app.ips.map((ip) => ip.type).sort(), ["shared_v4", "v6"]);

  const machines = mock.liveMachines(APP);
  const volumes = mock.liveVolumes(APP);
  assert.deepEqual(byRegion(machines), { iad: 2, sea: 2 });
  assert.deepEqual(byRegion(volumes), { iad: 2, sea: 2 });
  for (const m of machines) {
    const c = m.config;
    assert.equal(m.state, "started");
    assert.equal(c.image, "registry.fly.io/lasso-test:v1");
    assert.equal(c.mounts.length, 1);
    assert.equal(c.mounts[0].path, "/data");
    const vol = mock.state.volumes.get(c.mounts[0].volume);
    assert.equal(vol.region, m.region, "volume in the Machine's region");
    assert.equal(vol.attached_machine_id, m.id);
    assert.equal(vol.name, "lasso_data");
    assert.deepEqual(c.guest, { cpu_kind: "performance", cpus: 2, memory_mb: 4096 });
    assert.deepEqual(c.stop_config, { signal: "SIGINT", timeout: "30s" });
    assert.equal(c.env.LASSO_CHAINS_PATH, "/data/chains.yml");
    assert.equal(c.env.LASSO_SNAPSHOTS_DIR, "/data/benchmark_snapshots");
    assert.equal(c.env.LASSO_BACKUP_DIR, "/data/config_backups");
    assert.equal(c.env.PORT, "4000");
    const [svc] = c.services;
    assert.equal(svc.internal_port, 4000);
    assert.equal(svc.autostop, "off");
    assert.deepEqual(svc.ports, [
      { port: 80, handlers: ["http"] },
      { port: 443, handlers: ["tls", "http"] },
    ]);
    assert.deepEqual(svc.concurrency, { type: "connections", soft_limit: 500, hard_limit: 1000 });
    assert.equal(svc.checks[0].path, "/api/health");
    assert.equal(c.checks.health.path, "/api/health");
    assert.equal(c.checks.health.port, 4000);
    assert.equal(c.checks.health.method, "GET");
    assert.equal(c.metadata.lasso_managed, "true");
  }
  // Distinct hosts per region's volumes.
  assert.ok(mock.calls.filter((c) => c.method === "POST" && c.path.endsWith("/volumes")).every((c) => c.body.require_unique_zone));
});

test("re-running with the same settings creates nothing and sets no secret", async () => {
  const env = { REGIONS: "iad,sea", MACHINE_COUNT: "2", INFURA_API_KEY: "k1" };
  ok(await provision(mock, env));
  const machinesBefore = mock.liveMachines(APP).map((m) => m.id).sort();
  const mark = mock.calls.length;
  const r = await provision(mock, env);
  ok(r);
  assert.deepEqual(mock.writesSince(mark), [], "second run made no state-changing call");
  assert.deepEqual(mock.liveMachines(APP).map((m) => m.id).sort(), machinesBefore);
  assert.match(r.stderr, /iad: 2 Machine\(s\), nothing to create/);
});

test("ROTATE_SECRETS=1 overwrites existing secrets; nothing else changes", async () => {
  ok(await provision(mock, { REGIONS: "iad", INFURA_API_KEY: "old" }));
  const mark = mock.calls.length;
  ok(await provision(mock, { REGIONS: "iad", INFURA_API_KEY: "new", ROTATE_SECRETS: "1" }));
  const writes = mock.writesSince(mark);
  assert.equal(writes.length, 1);
  assert.match(writes[0].body.query, /setSecrets/);
  assert.equal(mock.state.apps.get(APP).secrets.get("INFURA_API_KEY"), "new");
});

test("region expansion adds Machines and volumes only in the new region", async () => {
  ok(await provision(mock, { REGIONS: "iad,sea" }));
  const before = new Set(mock.liveMachines(APP).map((m) => m.id));
  const mark = mock.calls.length;
  ok(await provision(mock, { REGIONS: "iad,sea,ams" }));
  const creates = mock.writesSince(mark).filter((c) => c.method === "POST");
  assert.ok(creates.length > 0);
  for (const c of creates) assert.equal(c.body.region, "ams", `${c.path} targets ams only`);
  const added = mock.liveMachines(APP).filter((m) => !before.has(m.id));
  assert.deepEqual(byRegion(added), { ams: 2 });
  assert.deepEqual(byRegion(mock.liveMachines(APP)), { iad: 2, sea: 2, ams: 2 });
});

test("a lost Machine is replaced on its unattached volume, without a new volume", async () => {
  ok(await provision(mock, { REGIONS: "iad" }));
  const [victim] = mock.liveMachines(APP);
  victim.state = "destroyed";
  const vol = mock.state.volumes.get(victim.config.mounts[0].volume);
  vol.attached_machine_id = null;
  const mark = mock.calls.length;
  ok(await provision(mock, { REGIONS: "iad" }));
  const writes = mock.writesSince(mark);
  assert.equal(writes.filter((c) => c.path.endsWith("/volumes")).length, 0);
  assert.equal(writes.filter((c) => c.path.endsWith("/machines")).length, 1);
  assert.equal(vol.attached_machine_id !== null, true);
  assert.equal(mock.liveMachines(APP).length, 2);
});

test("transient 5xx answers are retried and do not create duplicates", async () => {
  mock.failNext("POST", /\/machines$/, 503, 1);
  mock.failNext("GET", /\/volumes$/, 502, 1);
  mock.failNext("POST", /^\/graphql$/, 500, 1);
  const r = await provision(mock, { REGIONS: "iad", MACHINE_COUNT: "2" });
  ok(r);
  assert.equal(mock.calls.filter((c) => c.injected).length, 3);
  assert.equal(mock.liveMachines(APP).length, 2);
  assert.equal(mock.liveVolumes(APP).length, 2);
});

test("a Machine create whose answer is lost (applied, then 502) is found by name, not created twice", async () => {
  mock.failNext("POST", /\/machines$/, 502, 1, { afterApply: true });
  const r = await provision(mock, { REGIONS: "iad", MACHINE_COUNT: "2" });
  ok(r);
  const creates = mock.calls.filter((c) => c.method === "POST" && c.path.endsWith("/machines"));
  assert.equal(creates.length, 3, "first create retried once");
  assert.equal(creates[0].body.name, creates[1].body.name, "the retry reuses the name");
  assert.equal(mock.liveMachines(APP).length, 2);
});

test("a Machine that never becomes healthy fails the run with a clear message, within the timeout", async () => {
  mock.unhealthyImages.add("registry.fly.io/lasso-test:bad");
  const t0 = Date.now();
  const r = await provision(mock, { REGIONS: "iad", IMAGE_REF: "registry.fly.io/lasso-test:bad" });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error: Machine \w+ did not become healthy within 1s: health=critical/);
  assert.ok(Date.now() - t0 < 15_000);
  // A re-run creates nothing but still reports the unhealthy Machines.
  const mark = mock.calls.length;
  const again = await provision(mock, { REGIONS: "iad", IMAGE_REF: "registry.fly.io/lasso-test:bad" });
  assert.equal(again.code, 1);
  assert.match(again.stderr, /did not become healthy/);
  assert.deepEqual(mock.writesSince(mark), []);
});

test("missing or invalid settings fail before any API call", async () => {
  for (const [env, msg] of [
    [{ FLY_API_TOKEN: undefined, REGIONS: "iad" }, /FLY_API_TOKEN is required/],
    [{ REGIONS: "" }, /REGIONS is required/],
    [{ REGIONS: "iad,US-EAST" }, /not a Fly region code/],
    [{ REGIONS: "iad", MACHINE_COUNT: "0" }, /MACHINE_COUNT must be an integer >= 1/],
    [{ REGIONS: "iad", IMAGE_REF: undefined }, /IMAGE_REF is required/],
    [{ REGIONS: "iad", SECRET_NAMES: "NOPE_API_KEY" }, /unset variables: NOPE_API_KEY/],
  ]) {
    const mark = mock.calls.length;
    const r = await provision(mock, env);
    assert.equal(r.code, 1, JSON.stringify(env));
    assert.match(r.stderr, msg);
    if (!("SECRET_NAMES" in env)) assert.equal(mock.calls.length, mark, "no API call");
  }
});

test("a wrong token is reported, not retried", async () => {
  const r = await provision(mock, { REGIONS: "iad", FLY_API_TOKEN: "wrong" });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /HTTP 401/);
  assert.equal(mock.calls.length, 1);
});

test("--print-config prints the Machine config without calling the API", async () => {
  const r = await runScript("provision.mjs", mock, { FLY_API_TOKEN: undefined, IMAGE_REF: "img:1" }, ["--print-config"]);
  ok(r);
  const config = JSON.parse(r.stdout);
  assert.equal(config.image, "img:1");
  assert.equal(config.services[0].internal_port, 4000);
  assert.equal(mock.calls.length, 0);
});
