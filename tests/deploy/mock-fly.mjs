// A stateful stand-in for the Fly Machines REST API and the GraphQL endpoint, on 127.0.0.1, for the deployment
// script tests. It records every call and can inject failures:
//   mock.failNext("POST", /\/machines$/, 503, 1)   answer the next matching request(s) with an error, no side effect
//     (..., { afterApply: true })                  the request takes effect but its answer is an error
//   mock.unhealthyImages.add(image)                Machines on that image start but their checks stay critical
//   mock.neverStartImages.add(image)               Machines on that image never reach `started`
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";

const id = (prefix = "") => prefix + randomBytes(7).toString("hex");

export async function startMockFly({ token = "test-token" } = {}) {
  const state = { apps: new Map(), machines: new Map(), volumes: new Map() };
  const calls = [];
  const failures = [];
  const unhealthyImages = new Set();
  const neverStartImages = new Set();
  let ipCounter = 0;

  const server = createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => (raw += c));
    req.on("end", () => {
      const url = new URL(req.url, "http://127.0.0.1");
      let body;
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        return send(res, 400, { error: "invalid JSON" });
      }
      const call = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), body };
      calls.push(call);
      if (req.headers.authorization !== `Bearer ${token}`) return send(res, 401, { error: "unauthorized" });
      const f = failures.find((x) => x.times > 0 && x.method === req.method && x.path.test(url.pathname));
      if (f) {
        f.times--;
        call.injected = f.status;
        if (f.afterApply) route(req.method, url, body); // the request took effect, but the answer is lost
        return send(res, f.status, { error: "injected failure" });
      }
      try {
        const [status, out] = route(req.method, url, body);
        send(res, status, out);
      } catch (err) {
        send(res, 500, { error: String(err?.stack ?? err) });
      }
    });
  });

  function send(res, status, out) {
    const text = out === undefined ? "" : JSON.stringify(out);
    res.writeHead(status, { "content-type": "application/json" });
    res.end(text);
  }

  function checksFor(m) {
    if (m.state !== "started") return [];
    const status = unhealthyImages.has(m.config.image) ? "critical" : "passing";
    const output = status === "passing" ? "200 OK" : "connection refused";
    const names = Object.keys(m.config.checks ?? {});
    (m.config.services ?? []).forEach((svc, i) =>
      (svc.checks ?? []).forEach((c) => names.push(`servicecheck-${String(i).padStart(2, "0")}-${c.type}-${svc.internal_port}`)),
    );
    return names.map((name) => ({ name, status, output, updated_at: new Date().toISOString() }));
  }

  const view = (m) => ({ ...m, checks: checksFor(m) });

  function route(method, url, body) {
    const p = url.pathname;
    if (p === "/graphql" && method === "POST") return graphql(body);
    if (p === "/v1/apps" && method === "POST") {
      if (!body?.app_name || !body?.org_slug) return [400, { error: "app_name and org_slug required" }];
      if (state.apps.has(body.app_name)) return [409, { error: "app already exists" }];
      state.apps.set(body.app_name, { name: body.app_name, org: body.org_slug, secrets: new Map(), ips: [] });
      return [201, { id: id("app_"), created_at: Date.now() }];
    }
    const m = p.match(/^\/v1\/apps\/([^/]+)(\/.*)?$/);
    if (!m) return [404, { error: "not found" }];
    const app = state.apps.get(decodeURIComponent(m[1]));
    const rest = m[2] ?? "";
    if (!app) return [404, { error: "app not found" }];
    if (rest === "" && method === "GET") return [200, { name: app.name, organization: { slug: app.org } }];

    const appMachines = () => [...state.machines.values()].filter((x) => x.app === app.name);
    const appVolumes = () => [...state.volumes.values()].filter((x) => x.app === app.name);

    if (rest === "/volumes" && method === "GET") return [200, appVolumes().filter((v) => v.state !== "destroyed")];
    if (rest === "/volumes" && method === "POST") {
      if (!body?.name || !body?.region) return [400, { error: "name and region required" }];
      if (body.source_volume_id) {
        const src = state.volumes.get(body.source_volume_id);
        if (!src || src.state === "destroyed") return [404, { error: "source volume not found" }];
        if (src.region !== body.region) return [422, { error: "fork must stay in the source's region" }];
      }
      const v = {
        id: id("vol_"),
        app: app.name,
        name: body.name,
        region: body.region,
        size_gb: body.size_gb ?? 3,
        state: "created",
        encrypted: true,
        attached_machine_id: null,
        source_volume_id: body.source_volume_id ?? null,
        require_unique_zone: body.require_unique_zone,
        created_at: new Date().toISOString(),
      };
      state.volumes.set(v.id, v);
      return [200, v];
    }
    const vm = rest.match(/^\/volumes\/([^/]+)$/);
    if (vm) {
      const v = state.volumes.get(vm[1]);
      if (!v || v.app !== app.name || v.state === "destroyed") return [404, { error: "volume not found" }];
      if (method === "GET") return [200, v];
      if (method === "DELETE") {
        if (v.attached_machine_id) return [409, { error: `volume attached to ${v.attached_machine_id}` }];
        v.state = "destroyed";
        return [200, v];
      }
    }

    if (rest === "/machines" && method === "GET") return [200, appMachines().filter((x) => x.state !== "destroyed").map(view)];
    if (rest === "/machines" && method === "POST") {
      const config = body?.config;
      if (!config?.image) return [400, { error: "config.image required" }];
      if (body.name && appMachines().some((x) => x.name === body.name && x.state !== "destroyed")) {
        return [409, { error: `machine name ${body.name} already exists` }];
      }
      const region = body.region ?? "iad";
      for (const mount of config.mounts ?? []) {
        const v = state.volumes.get(mount.volume);
        if (!v || v.state === "destroyed") return [422, { error: `volume ${mount.volume} not found` }];
        if (v.region !== region) return [422, { error: `volume ${v.id} is in ${v.region}, not ${region}` }];
        if (v.attached_machine_id) return [422, { error: `volume ${v.id} already attached to ${v.attached_machine_id}` }];
      }
      const machine = {
        id: id(),
        app: app.name,
        name: body.name ?? id("machine-"),
        region,
        state: neverStartImages.has(config.image) ? "created" : "started",
        instance_id: id("inst_"),
        private_ip: `fdaa:0:1::${++ipCounter}`,
        config: structuredClone(config),
        cordoned: Boolean(body.skip_service_registration),
        stops: [],
        created_at: new Date().toISOString(),
      };
      for (const mount of config.mounts ?? []) state.volumes.get(mount.volume).attached_machine_id = machine.id;
      state.machines.set(machine.id, machine);
      return [200, view(machine)];
    }
    const mm = rest.match(/^\/machines\/([^/]+)(\/.*)?$/);
    if (!mm) return [404, { error: "not found" }];
    const machine = state.machines.get(mm[1]);
    if (!machine || machine.app !== app.name || machine.state === "destroyed") return [404, { error: "machine not found" }];
    const action = mm[2] ?? "";
    if (action === "" && method === "GET") return [200, view(machine)];
    if (action === "" && method === "DELETE") {
      if (machine.state === "started" && url.searchParams.get("force") !== "true") {
        return [412, { error: "machine still active, refusing to delete" }];
      }
      machine.state = "destroyed";
      for (const v of state.volumes.values()) if (v.attached_machine_id === machine.id) v.attached_machine_id = null;
      return [200, { ok: true }];
    }
    if (action === "/wait" && method === "GET") {
      const want = url.searchParams.get("state") ?? "started";
      if (want === "stopped" && !url.searchParams.get("instance_id")) return [400, { error: "instance_id required" }];
      return machine.state === want ? [200, { ok: true }] : [408, { error: "deadline exceeded" }];
    }
    if (action === "/stop" && method === "POST") {
      machine.stops.push(body ?? {});
      machine.state = "stopped";
      return [200, { ok: true }];
    }
    if (action === "/cordon" && method === "POST") {
      machine.cordoned = true;
      return [200, { ok: true }];
    }
    if (action === "/uncordon" && method === "POST") {
      machine.cordoned = false;
      return [200, { ok: true }];
    }
    const md = action.match(/^\/metadata\/([^/]+)$/);
    if (md && method === "POST") {
      machine.config.metadata = { ...machine.config.metadata, [decodeURIComponent(md[1])]: body?.value };
      return [204, undefined];
    }
    return [404, { error: "not found" }];
  }

  function graphql(body) {
    const q = body?.query ?? "";
    const vars = body?.variables ?? {};
    const appName = vars.name ?? vars.input?.appId;
    const app = state.apps.get(appName);
    if (!app) return [200, { data: null, errors: [{ message: `Could not find App "${appName}"` }] }];
    if (q.includes("setSecrets")) {
      for (const { key, value } of vars.input.secrets) app.secrets.set(key, value);
      return [200, { data: { setSecrets: { release: { version: app.secrets.size } } } }];
    }
    if (q.includes("allocateIpAddress")) {
      const type = vars.input.type;
      const address = type === "v6" ? `2a09:8280:1::${app.ips.length + 1}` : `66.241.124.${app.ips.length + 1}`;
      app.ips.push({ address, type });
      return [200, { data: { allocateIpAddress: { ipAddress: { address, type } } } }];
    }
    if (q.includes("ipAddresses")) return [200, { data: { app: { ipAddresses: { nodes: app.ips } } } }];
    if (q.includes("secrets")) {
      return [200, { data: { app: { secrets: [...app.secrets.keys()].map((name) => ({ name })) } } }];
    }
    return [200, { data: null, errors: [{ message: "unsupported query" }] }];
  }

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    token,
    state,
    calls,
    unhealthyImages,
    neverStartImages,
    env: { FLY_API_TOKEN: token, FLY_API_BASE: `${base}/v1`, FLY_GRAPHQL_URL: `${base}/graphql` },
    failNext(method, path, status = 503, times = 1, { afterApply = false } = {}) {
      failures.push({ method, path, status, times, afterApply });
    },
    clearFailures() {
      failures.length = 0;
    },
    /** Calls after `mark` (an index from calls.length) that change state. */
    writesSince(mark = 0) {
      return calls.slice(mark).filter((c) => c.method !== "GET" && !/^query/.test(c.body?.query ?? ""));
    },
    liveMachines(app) {
      return [...state.machines.values()].filter((m) => m.app === app && m.state !== "destroyed");
    },
    liveVolumes(app) {
      return [...state.volumes.values()].filter((v) => v.app === app && v.state !== "destroyed");
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
