#!/usr/bin/env node
// Blue/green rollout of IMAGE_REF to Lasso's Fly Machines, one Machine at a time per region (N -> N+1 -> N):
//
//   1. fork the blue Machine's volume in its region (a Fly volume attaches to one Machine, so green cannot mount
//      blue's while blue serves; the fork carries /data over: the live chains.yml and routing snapshots),
//   2. create green from blue's config with the new image on the fork, registered cordoned (no traffic yet),
//   3. wait until green has started and its health checks pass (bounded by HEALTH_TIMEOUT_S),
//   4. uncordon green (it serves), then mark blue retiring, cordon it, wait DRAIN_WAIT_S, stop it with SIGINT
//      (Lasso drains for up to 30 s), destroy it and delete its volume (KEEP_OLD_VOLUMES=1 keeps it).
//
// If any step up to 4 fails, green and its volume are removed, blue is left serving untouched, and the rollout stops
// (exit 1). Re-running is safe: Machines already on IMAGE_REF are skipped, a blue marked retiring is only retired.
//
//   FLY_API_TOKEN=... FLY_APP_NAME=lasso-prod IMAGE_REF=registry.fly.io/lasso-prod:v2 node deployment/roll.mjs
//
// Env: REGIONS (default: every region with Lasso Machines), ROLL_ALL=1 (replace Machines already on IMAGE_REF too,
// e.g. to pick up rotated secrets), HEALTH_TIMEOUT_S (180), DRAIN_WAIT_S (5), STOP_TIMEOUT_S (60),
// KEEP_OLD_VOLUMES=1, POLL_INTERVAL_MS (2000), FLY_API_BASE, FLY_GRAPHQL_URL.
import {
  DeployError,
  Fly,
  VOLUME_NAME,
  createMachine,
  isLive,
  isManaged,
  log,
  required,
  run,
  settings,
  sleep,
  waitHealthy,
  waitState,
} from "./lib/fly.mjs";

const RETIRING = "lasso_retiring";

async function main() {
  const env = process.env;
  const s = settings(env);
  required(env, "FLY_APP_NAME");
  required(env, "IMAGE_REF");
  const fly = new Fly({ token: env.FLY_API_TOKEN, app: s.app, env, requestTimeoutMs: s.requestTimeoutMs, retries: s.retries });

  const machines = (await fly.listMachines()).filter((m) => isManaged(m) && isLive(m));
  const regions = s.regions.length ? s.regions : [...new Set(machines.map((m) => m.region))].sort();
  const rollAll = env.ROLL_ALL === "1";
  const blues = machines.filter(
    (m) => regions.includes(m.region) && (rollAll || m.config?.image !== s.image || m.config?.metadata?.[RETIRING]),
  );
  if (blues.length === 0) {
    log(`nothing to roll: every Lasso Machine in ${regions.join(", ") || "(no regions)"} runs ${s.image}`);
    return;
  }
  const from = [...new Set(blues.map((m) => m.config?.image))].join(", ");
  log(`rolling ${blues.length} Machine(s) in ${regions.join(", ")} from ${from} to ${s.image} (roll back: IMAGE_REF=${from})`);
  const volumes = new Map((await fly.listVolumes()).map((v) => [v.id, v]));
  let replaced = 0;
  for (const region of regions) {
    for (const blue of blues.filter((m) => m.region === region)) {
      if (!blue.config?.metadata?.[RETIRING]) {
        await startGreen(fly, s, blue, volumes);
        replaced++;
      } else {
        log(`${region}: ${blue.id} was already being retired by an earlier run; finishing that`);
      }
      try {
        await retireBlue(fly, s, blue);
      } catch (err) {
        throw new DeployError(
          `${region}: the new image serves, but retiring blue ${blue.id} failed (${err.message}); re-run roll.mjs to finish`,
        );
      }
    }
  }
  log(`done: ${replaced} Machine(s) replaced with ${s.image}`);
}

/** Steps 1-3 plus uncordon. On any failure removes green and its volume, leaves blue alone, and throws. */
async function startGreen(fly, s, blue, volumes) {
  const region = blue.region;
  const current = await fly.getMachine(blue.id);
  const config = structuredClone(current.config);
  const mount = config.mounts?.[0];
  let volume;
  let green;
  try {
    if (mount) {
      const source = volumes.get(mount.volume);
      volume = await fly.createVolume({
        name: VOLUME_NAME,
        region,
        size_gb: source?.size_gb ?? s.volumeSizeGb,
        source_volume_id: mount.volume,
        // Blue's volume still holds its zone until blue is gone; a unique zone may not be available.
        require_unique_zone: false,
      });
      config.mounts = [{ ...mount, volume: volume.id }];
      log(`${region}: forked ${mount.volume} -> ${volume.id} for the green of ${blue.id}`);
    }
    config.image = s.image;
    delete config.metadata?.[RETIRING];
    green = await createMachine(fly, { region, config, skip_service_registration: true });
    log(`${region}: green ${green.id} created (cordoned) with ${s.image}`);
    await waitState(fly, green.id, "started", green.instance_id, { timeoutMs: s.healthTimeoutMs, pollMs: s.pollMs });
    await waitHealthy(fly, green.id, { timeoutMs: s.healthTimeoutMs, pollMs: s.pollMs });
    await fly.uncordon(green.id);
    log(`${region}: green ${green.id} is healthy and serving`);
  } catch (err) {
    log(`${region}: green for ${blue.id} failed: ${err.message}`);
    await cleanup(fly, green, volume);
    throw new DeployError(
      `rollout aborted in ${region}: green for ${blue.id} failed (${err.message}); blue ${blue.id} is untouched and serving`,
    );
  }
}

async function cleanup(fly, green, volume) {
  try {
    if (green) {
      await fly.destroyMachine(green.id, true);
      log(`removed green ${green.id}`);
    }
    if (volume) {
      await fly.deleteVolume(volume.id);
      log(`removed volume ${volume.id}`);
    }
  } catch (err) {
    log(`warning: cleanup incomplete (${err.message}); remove leftovers with fly machine destroy / fly volumes destroy`);
  }
}

/** Step 4 after green serves: cordon, SIGINT, destroy, delete the old volume. Blue carries no new traffic from here. */
async function retireBlue(fly, s, blue) {
  const region = blue.region;
  await fly.setMetadata(blue.id, RETIRING, s.image);
  await fly.cordon(blue.id);
  if (s.drainWaitMs) await sleep(s.drainWaitMs);
  const current = await fly.getMachine(blue.id);
  if (current.state !== "stopped") {
    await fly.stopMachine(blue.id, "SIGINT", "30s");
    await waitState(fly, blue.id, "stopped", current.instance_id, { timeoutMs: s.stopTimeoutMs, pollMs: s.pollMs });
  }
  await fly.destroyMachine(blue.id);
  log(`${region}: blue ${blue.id} stopped (SIGINT) and destroyed`);
  const volumeId = current.config?.mounts?.[0]?.volume;
  if (volumeId && !s.keepOldVolumes) {
    try {
      await fly.deleteVolume(volumeId);
      log(`${region}: deleted blue's volume ${volumeId}`);
    } catch (err) {
      log(`warning: ${region}: could not delete blue's volume ${volumeId} (${err.message}); fly volumes destroy ${volumeId}`);
    }
  }
}

await run(main);
