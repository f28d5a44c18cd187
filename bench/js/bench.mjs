// The automerge-repo side of reflow-bench: the harness's workloads on @automerge/automerge-repo
// (NodeFS storage, websocket network adapter on 127.0.0.1), one Node process per repo.
//
//   node bench.mjs <scenario> '<json arguments>'      prints one line `RESULT <json>`
//
// The document is the one Reflow holds (the harness writes its saved bytes to a file), so the
// shape is the same: 256 event buckets created at genesis, each event one string value (its
// JSON) under its own key. Events to write come from a file of lines `bucket<TAB>key<TAB>json`.
//
// Every repo (a "worker") runs in its own child process, as every Reflow node has its own
// runtime threads: one JavaScript thread cannot run two peers at once. Times are taken with
// process.hrtime (CLOCK_MONOTONIC, comparable between processes of one machine). Bytes on the
// wire are the TCP payload counted by each server's accepted sockets (bytesRead +
// bytesWritten: both directions of every link, websocket framing included). Nothing listens
// or dials beyond 127.0.0.1.

import { fork } from "node:child_process";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

// ------------------------------------------------------------------------------------------
// Worker: one repo.

async function worker() {
  const A = await import("@automerge/automerge");
  const { Repo } = await import("@automerge/automerge-repo");
  const { NodeFSStorageAdapter } = await import("@automerge/automerge-repo-storage-nodefs");
  const { WebSocketServerAdapter, WebSocketClientAdapter } = await import(
    "@automerge/automerge-repo-network-websocket"
  );
  const { WebSocketServer } = await import("ws");
  const Str = A.ImmutableString ?? A.RawString;

  let repo = null;
  let storageDir = null;
  let handle = null;
  const sockets = [];
  let wss = null;
  const send = (m) => process.send(m);
  const sortedHeads = () => (handle ? [...handle.heads()].sort() : []);
  const watch = () => {
    handle.on("change", () => send({ ev: "heads", t: nowMs(), heads: sortedHeads() }));
  };

  // `flush()` waits only for the saves it starts itself. A save the repo's throttle started
  // earlier can still be writing the same snapshot file (NodeFS truncates, then writes), and
  // two overlapping saves can leave the repo believing older heads are stored, so a process
  // that exits right after `shutdown()` can leave a partial file behind. Before a scenario
  // reads this storage from a new process, wait until a fresh reader of the directory loads
  // the document with the heads this process holds (bounded: 200 tries, 25 ms apart).
  const settle = async () => {
    const want = JSON.stringify([...A.getHeads(handle.doc())].sort());
    for (let k = 0; k < 200; k++) {
      const chunks = await new NodeFSStorageAdapter(storageDir).loadRange([handle.documentId]);
      const data = chunks.filter((c) => c.key[1] !== "sync-state" && c.data).map((c) => c.data);
      let got = "[]";
      try {
        let doc = A.init();
        for (const d of data) doc = A.loadIncremental(doc, d);
        got = JSON.stringify([...A.getHeads(doc)].sort());
      } catch {
        // a chunk being written: read again
      }
      if (got === want) return;
      await new Promise((r) => setTimeout(r, 25));
      await repo.flush();
    }
    throw new Error(`storage never held heads ${want}`);
  };

  process.on("message", async (m) => {
    try {
      switch (m.cmd) {
        case "init": {
          storageDir = m.storage;
          repo = new Repo({
            storage: new NodeFSStorageAdapter(m.storage),
            network: [],
            peerId: m.peer,
            sharePolicy: async () => true,
          });
          if (m.doc) {
            const bytes = new Uint8Array(readFileSync(m.doc));
            handle = m.docId ? repo.import(bytes, { docId: m.docId }) : repo.import(bytes);
            await handle.whenReady();
            await repo.flush();
            watch();
          }
          let port = 0;
          if (m.serve) {
            wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
            await new Promise((r) => wss.on("listening", r));
            wss.on("connection", (ws) => sockets.push(ws._socket));
            repo.networkSubsystem.addNetworkAdapter(new WebSocketServerAdapter(wss));
            port = wss.address().port;
          }
          send({ ev: "ok", port, docId: handle?.documentId, heads: sortedHeads() });
          break;
        }
        case "connect": {
          const adapters = m.ports.map((port) => new WebSocketClientAdapter(`ws://127.0.0.1:${port}`));
          for (const a of adapters) repo.networkSubsystem.addNetworkAdapter(a);
          // Only the new client adapters: a server adapter is not ready until dialled.
          await Promise.all(adapters.map((a) => a.whenReady()));
          if (m.find) {
            handle = await repo.find(m.find);
            watch();
            send({ ev: "heads", t: nowMs(), heads: sortedHeads() });
          }
          send({ ev: "ok" });
          break;
        }
        case "write": {
          const lines = readFileSync(m.events, "utf8").split("\n");
          const t0 = nowMs();
          const per = m.per ?? 1;
          for (let i = m.from; i < m.to; i += per) {
            handle.change((d) => {
              for (let j = i; j < Math.min(i + per, m.to); j++) {
                const [bucket, key, text] = lines[j].split("\t");
                d.eventBuckets[bucket][m.suffix ? key + m.suffix : key] = new Str(text);
              }
            });
          }
          const t1 = nowMs();
          if (m.flush) await repo.flush();
          send({ ev: "ok", t0, t1, t2: nowMs(), heads: sortedHeads() });
          break;
        }
        case "open": {
          const t0 = nowMs();
          handle = await repo.find(m.docId);
          const doc = handle.doc();
          const buckets = Object.keys(doc.eventBuckets ?? {}).length;
          send({ ev: "ok", s: (nowMs() - t0) / 1e3, buckets, heads: sortedHeads() });
          break;
        }
        case "stats": {
          let bytes = 0;
          for (const s of sockets) bytes += s.bytesRead + s.bytesWritten;
          send({ ev: "ok", rss: process.memoryUsage().rss, bytes });
          break;
        }
        case "exit": {
          await repo?.shutdown();
          if (m.settle && handle) await settle();
          wss?.close();
          send({ ev: "ok" });
          process.exit(0);
        }
      }
    } catch (e) {
      send({ ev: "error", error: String(e?.stack ?? e) });
    }
  });
  send({ ev: "ok" });
}

// ------------------------------------------------------------------------------------------
// Coordinator.

class Worker {
  constructor(i) {
    this.i = i;
    this.heads = [];
    this.waiting = [];
    this.onHeads = null;
    this.proc = fork(fileURLToPath(import.meta.url), ["worker"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.proc.on("message", (m) => {
      if (m.ev === "heads") {
        this.heads = m.heads;
        this.onHeads?.(this, m);
      } else if (m.ev === "error") {
        console.error(`worker ${i}: ${m.error}`);
        process.exit(1);
      } else {
        this.waiting.shift()?.(m);
      }
    });
    this.ready = new Promise((r) => this.waiting.push(r));
  }
  call(m) {
    return new Promise((r) => {
      this.waiting.push(r);
      this.proc.send(m);
    });
  }
}

const same = (a, b) => a.length === b.length && a.every((x, k) => x === b[k]);

/** Resolve when every worker in `ws` has `target` heads; the time (hrtime ms) each got them. */
function allHave(ws, target, timeoutMs) {
  return new Promise((resolve, reject) => {
    const got = new Map();
    const check = (w, m) => {
      if (!got.has(w.i) && same(w.heads, target)) got.set(w.i, m?.t ?? nowMs());
      if (got.size === ws.length) {
        for (const x of ws) x.onHeads = null;
        clearTimeout(timer);
        resolve(got);
      }
    };
    const timer = setTimeout(() => reject(new Error("timed out waiting for heads")), timeoutMs);
    for (const w of ws) {
      w.onHeads = check;
      check(w, null);
    }
  });
}

/** Start `n` repos numbered from `base`, repo i storing in dirs[i]. */
async function start(n, dirs, init, base = 0) {
  const ws = [];
  for (let i = base; i < base + n; i++) {
    const w = new Worker(i);
    await w.ready;
    const r = await w.call({ cmd: "init", storage: dirs[i], peer: `peer-${i}`, ...init(i) });
    w.port = r.port;
    w.docId = r.docId;
    w.heads = r.heads;
    ws.push(w);
  }
  return ws;
}

async function stop(ws, settle = false) {
  const stats = [];
  for (const w of ws) stats.push(await w.call({ cmd: "stats" }));
  for (const w of ws) await w.call({ cmd: "exit", settle });
  return {
    bytes: stats.reduce((s, x) => s + x.bytes, 0),
    rss: stats.map((x) => x.rss),
  };
}

const WAIT = 600_000;

async function scenario(name, a) {
  const tmp = mkdtempSync(join(tmpdir(), "reflow-bench-repo-"));
  const dirs = Array.from({ length: 16 }, (_, i) => join(tmp, `repo-${i}`));
  try {
    switch (name) {
      case "record": {
        // Record `n` events, one change each, into the genesis document; flushed to NodeFS.
        const [w] = await start(1, dirs, () => ({ doc: a.genesis }));
        const r = await w.call({ cmd: "write", events: a.events, from: 0, to: a.n, flush: true });
        const s = await stop([w]);
        return { s: (r.t2 - r.t0) / 1e3, in_memory_s: (r.t1 - r.t0) / 1e3, rss: s.rss[0] };
      }
      case "open": {
        // A repo that stored the document is started again; time until find() has it.
        const [w] = await start(1, dirs, () => ({ doc: a.doc }));
        const docId = w.docId;
        await stop([w], true);
        const runs = [];
        for (let k = 0; k < a.runs; k++) {
          const [o] = await start(1, dirs, () => ({}));
          const r = await o.call({ cmd: "open", docId });
          if (r.buckets !== 256) throw new Error(`opened document has ${r.buckets} buckets`);
          const s = await stop([o]);
          runs.push({ s: r.s, rss: s.rss[0] });
        }
        return { runs };
      }
      case "join":
      case "catch-up": {
        // Repo 1 (empty, or holding the prefix) connects to repo 0, which holds the document.
        const runs = [];
        for (let k = 0; k < a.runs; k++) {
          rmSync(tmp, { recursive: true, force: true });
          const [w0] = await start(1, dirs, () => ({ doc: a.doc, serve: true }));
          const prefix = name === "catch-up";
          const [w1] = await start(1, dirs, () => (prefix ? { doc: a.prefix, docId: w0.docId } : {}), 1);
          const target = w0.heads;
          const t0 = nowMs();
          const done = allHave([w1], target, WAIT);
          await w1.call({ cmd: "connect", ports: [w0.port], find: prefix ? undefined : w0.docId });
          const got = await done;
          const s = (got.get(1) - t0) / 1e3;
          const st = await stop([w0, w1]);
          runs.push({ s, bytes: st.bytes, rss: st.rss });
        }
        return { runs };
      }
      case "live": {
        // `nodes` repos in a line (each connected to the previous) or a full mesh; events
        // written one after the other on repo 0; time until the farthest / last repo has it.
        const [w0] = await start(1, dirs, () => ({ doc: a.doc, serve: true }));
        const rest = [];
        for (let i = 1; i < a.nodes; i++) {
          const [w] = await start(1, dirs, () => ({ doc: a.doc, docId: w0.docId, serve: true }), i);
          rest.push(w);
        }
        const all = [w0, ...rest];
        for (let i = 1; i < a.nodes; i++) {
          const ports = a.mesh ? all.slice(0, i).map((w) => w.port) : [all[i - 1].port];
          await all[i].call({ cmd: "connect", ports });
        }
        const lat = [];
        const first = [];
        let bytes0 = 0;
        for (let k = 0; k < a.warmup + a.count; k++) {
          if (k === a.warmup) {
            bytes0 = 0;
            for (const w of all) bytes0 += (await w.call({ cmd: "stats" })).bytes;
          }
          const r = await all[0].call({ cmd: "write", events: a.events, from: k, to: k + 1, suffix: "-live" });
          const got = await allHave(all.slice(1), r.heads, WAIT);
          if (k >= a.warmup) {
            const times = [...got.values()].map((t) => (t - r.t0) / 1e3);
            lat.push(a.mesh ? Math.max(...times) : (got.get(a.nodes - 1) - r.t0) / 1e3);
            first.push(Math.min(...times));
          }
        }
        const st = await stop(all);
        return { lat, first, bytes: st.bytes - bytes0, rss: st.rss };
      }
      case "conflict-merge": {
        // 4 repos holding the document, offline, each writes `k` events; then a full mesh.
        const [w0] = await start(1, dirs, () => ({ doc: a.doc, serve: true }));
        const docId = w0.docId;
        const all = [w0];
        for (let i = 1; i < 4; i++) {
          const [w] = await start(1, dirs, () => ({ doc: a.doc, docId, serve: true }), i);
          all.push(w);
        }
        const heads = new Set();
        for (let i = 0; i < 4; i++) {
          const from = i * a.k;
          const r = await all[i].call({ cmd: "write", events: a.events, from, to: from + a.k, suffix: `-n${i}` });
          for (const h of r.heads) heads.add(h);
        }
        const target = [...heads].sort();
        const t0 = nowMs();
        const done = allHave(all, target, WAIT);
        for (let i = 1; i < 4; i++) {
          await all[i].call({ cmd: "connect", ports: all.slice(0, i).map((w) => w.port) });
        }
        const got = await done;
        const s = (Math.max(...got.values()) - t0) / 1e3;
        const st = await stop(all);
        return { s, bytes: st.bytes, rss: st.rss };
      }
      default:
        throw new Error(`unknown scenario ${name}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[2] === "worker") {
  await worker();
} else {
  const [name, json] = process.argv.slice(2);
  const result = await scenario(name, JSON.parse(json ?? "{}"));
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(0);
}
