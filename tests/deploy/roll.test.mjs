// deployment/roll.mjs against the mock Fly API: blue/green per Machine, failed greens leave blue serving, resumable.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startMockFly } from "./mock-fly.mjs";
import { provision, roll } from "./helpers.mjs";

const APP = "lasso-test";
const V1 = "registry.fly.io/lasso-test:v1";
const V2 = "registry.fly.io/lasso-test:v2";
let mock;
beforeEach(async () => {
  mock = await startMockFly();
  const r = await provision(mock, { REGIONS: "iad,sea", MACHINE_COUNT: "2", IMAGE_REF: V1 });
  assert.equal(r.code, 0, r.stderr);
});
afterEach(() => mock.close());

const ok = (r) => assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}`);
const snapshot = () =>
  mock.liveMachines(APP).map((m) => ({ id: m.id, state: m.state, image: m.config.image, cordoned: m.cordoned }));
const callsFor = (id, since) => mock.calls.slice(since).filter((c) => c.path.includes(`/machines/${id}`) && c.method !== "GET");

test("roll replaces every Machine with a healthy green on a fork of its volume, then retires blue with SIGINT", async () => {
  const blues = mock.liveMachines(APP);
  const blueVolumes = new Set(blues.map((m) => m.config.mounts[0].volume));
  const mark = mock.calls.length;
  const r = await roll(mock, { IMAGE_REF: V2 });
  ok(r);

  const live = mock.liveMachines(APP);
  assert.equal(live.length, 4, "same capacity after the roll");
  assert.deepEqual(
    live.map((m) => m.region).sort(),
    ["iad", "iad", "sea", "sea"],
  );
  for (const m of live) {
    assert.equal(m.config.image, V2);
    assert.equal(m.state, "started");
    assert.equal(m.cordoned, false, "green serves");
    assert.equal(m.config.metadata.lasso_retiring, undefined);
    assert.deepEqual(m.config.stop_config, { signal: "SIGINT", timeout: "30s" }, "config carried over from blue");
    assert.equal(m.config.services[0].concurrency.hard_limit, 1000);
    const vol = mock.state.volumes.get(m.config.mounts[0].volume);
    assert.equal(vol.region, m.region);
    assert.ok(blueVolumes.has(vol.source_volume_id), "green's volume is a fork of a blue volume in its region");
  }
  // Old volumes are gone; only greens' remain.
  assert.equal(mock.liveVolumes(APP).length, 4);
  for (const id of blueVolumes) assert.equal(mock.state.volumes.get(id).state, "destroyed");

  for (const blue of blues) {
    assert.equal(mock.state.machines.get(blue.id).state, "destroyed");
    assert.deepEqual(mock.state.machines.get(blue.id).stops, [{ signal: "SIGINT", timeout: "30s" }]);
    // Order: green created cordoned -> green healthy and uncordoned -> blue cordoned -> stopped -> destroyed.
    const steps = callsFor(blue.id, mark).map((c) => `${c.method} ${c.path.split(blue.id)[1] || "/"}`);
    assert.deepEqual(steps, ["POST /metadata/lasso_retiring", "POST /cordon", "POST /stop", "DELETE /"]);
  }
  const creates = mock.calls.slice(mark).filter((c) => c.method === "POST" && c.path.endsWith("/machines"));
  assert.equal(creates.length, 4);
  for (const c of creates) assert.equal(c.body.skip_service_registration, true);
  // One Machine at a time: each blue is cordoned only after a green was uncordoned, and never more than N+1 live.
  const seq = mock.calls.slice(mark).filter((c) => /\/(uncordon|cordon)$/.test(c.path)).map((c) => c.path.split("/").pop());
  assert.deepEqual(seq, ["uncordon", "cordon", "uncordon", "cordon", "uncordon", "cordon", "uncordon", "cordon"]);
});

test("a green that never becomes healthy is removed and blue keeps serving untouched; rollout stops", async () => {
  mock.unhealthyImages.add(V2);
  const before = snapshot();
  const volumesBefore = mock.liveVolumes(APP).map((v) => v.id).sort();
  const mark = mock.calls.length;
  const r = await roll(mock, { IMAGE_REF: V2 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error: rollout aborted in iad: green for \w+ failed \(Machine \w+ did not become healthy within 1s/);
  assert.match(r.stderr, /is untouched and serving/);

  assert.deepEqual(snapshot(), before, "blue Machines: same ids, started, old image, not cordoned");
  for (const m of before) assert.deepEqual(callsFor(m.id, mark), [], `no write touched blue ${m.id}`);
  assert.deepEqual(mock.liveVolumes(APP).map((v) => v.id).sort(), volumesBefore, "green's fork was deleted");
  const creates = mock.calls.slice(mark).filter((c) => c.method === "POST" && c.path.endsWith("/machines"));
  assert.equal(creates.length, 1, "aborted after the first failed green (no other region touched)");
});

test("a green that never starts is removed within the timeout; blue untouched", async () => {
  mock.neverStartImages.add(V2);
  const before = snapshot();
  const r = await roll(mock, { IMAGE_REF: V2 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /did not reach state started within 1s/);
  assert.deepEqual(snapshot(), before);
  assert.equal(mock.liveVolumes(APP).length, 4);
});

test("a failed green Machine create (API error) removes the fork and leaves blue untouched", async () => {
  mock.failNext("POST", /\/machines$/, 422, 1);
  const before = snapshot();
  const r = await roll(mock, { IMAGE_REF: V2 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /HTTP 422/);
  assert.deepEqual(snapshot(), before);
  assert.equal(mock.liveVolumes(APP).length, 4);
});

test("re-running with the same IMAGE_REF does nothing", async () => {
  ok(await roll(mock, { IMAGE_REF: V2 }));
  const mark = mock.calls.length;
  const r = await roll(mock, { IMAGE_REF: V2 });
  ok(r);
  assert.match(r.stderr, /nothing to roll/);
  assert.deepEqual(mock.writesSince(mark), []);
});

test("REGIONS limits the roll to those regions", async () => {
  ok(await roll(mock, { IMAGE_REF: V2, REGIONS: "sea" }));
  const images = Object.fromEntries(["iad", "sea"].map((r) => [r, mock.liveMachines(APP).filter((m) => m.region === r).map((m) => m.config.image)]));
  assert.deepEqual(images, { iad: [V1, V1], sea: [V2, V2] });
});

test("if retiring blue fails after green serves, a re-run finishes without adding Machines", async () => {
  mock.failNext("POST", /\/stop$/, 500, 100);
  const r = await roll(mock, { IMAGE_REF: V2, API_RETRIES: "0" });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /the new image serves, but retiring blue \w+ failed/);
  assert.equal(mock.liveMachines(APP).length, 5, "N+1 while blue is cordoned");
  mock.clearFailures();
  mock.calls.length = 0;
  const r2 = await roll(mock, { IMAGE_REF: V2 });
  ok(r2);
  assert.match(r2.stderr, /already being retired/);
  const live = mock.liveMachines(APP);
  assert.equal(live.length, 4);
  assert.ok(live.every((m) => m.config.image === V2));
});

test("a rollback is a roll to the previous image", async () => {
  ok(await roll(mock, { IMAGE_REF: V2 }));
  ok(await roll(mock, { IMAGE_REF: V1 }));
  assert.ok(mock.liveMachines(APP).every((m) => m.config.image === V1 && m.state === "started"));
  assert.equal(mock.liveMachines(APP).length, 4);
});

test("ROLL_ALL=1 replaces Machines already on IMAGE_REF (restart for rotated secrets), blue/green", async () => {
  const before = new Set(mock.liveMachines(APP).map((m) => m.id));
  const r = await roll(mock, { IMAGE_REF: V1, ROLL_ALL: "1" });
  ok(r);
  const live = mock.liveMachines(APP);
  assert.equal(live.length, 4);
  assert.ok(live.every((m) => !before.has(m.id) && m.config.image === V1 && m.state === "started"));
});
