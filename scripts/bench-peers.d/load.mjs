// The HTTP client of scripts/bench-peers: N requests, C in flight, over
// keep-alive HTTP/1.1 connections (at most C), each one run of the workflow
// from start to finished result. Prints one JSON line:
//   {"runs", "failed", "wall_s", "runs_per_s", "p50_ms", "p99_ms", "first_error"}
//
//   node load.mjs --url URL --n N --c C [--wrap input] [--check FIELD] [--tag TAG]
//
// The body of request i is {"i": i, "tag": TAG} (wrapped as {"input": ...}
// with --wrap input, as `plait serve` takes it). A run counts as succeeded
// when the answer is 2xx and its JSON holds FIELD: true at the top, under
// `output` (Plait's run record) or under `result`.
import * as http from "node:http";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, index, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[index + 1]]);
    return pairs;
  }, []),
);
const url = new URL(args.url);
const total = Number(args.n);
const concurrency = Number(args.c);
const wrap = args.wrap;
const check = args.check || "s3";
const tag = args.tag || "bench";
const headers = { "content-type": "application/json" };

const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });

function once(i) {
  const input = { i, tag };
  const body = JSON.stringify(wrap ? { [wrap]: input } : input);
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const request = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: "POST",
        headers: { ...headers, "content-length": Buffer.byteLength(body) },
      },
      (response) => {
        const chunks = [];
        response.on("data", (chunk) => chunks.push(chunk));
        response.on("end", () => {
          const ms = Number(process.hrtime.bigint() - started) / 1e6;
          const text = Buffer.concat(chunks).toString("utf8");
          let ok = response.statusCode >= 200 && response.statusCode < 300;
          if (ok) {
            try {
              const value = JSON.parse(text);
              ok = [value, value && value.output, value && value.result].some(
                (candidate) => candidate && candidate[check] === true,
              );
            } catch {
              ok = false;
            }
          }
          resolve({ ms, ok, error: ok ? null : `HTTP ${response.statusCode}: ${text.slice(0, 300)}` });
        });
      },
    );
    request.on("error", (error) => {
      resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, ok: false, error: String(error) });
    });
    request.setTimeout(120000, () => request.destroy(new Error("no answer in 120 s")));
    request.end(body);
  });
}

const latencies = [];
let failed = 0;
let firstError = null;
let next = 0;
const begin = process.hrtime.bigint();
async function worker() {
  while (next < total) {
    const i = next++;
    const result = await once(i);
    if (result.ok) latencies.push(result.ms);
    else {
      failed += 1;
      firstError ??= result.error;
    }
  }
}
await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
const wall = Number(process.hrtime.bigint() - begin) / 1e9;
latencies.sort((a, b) => a - b);
const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] : null);
const round = (x, digits = 2) => (x === null ? null : Number(x.toFixed(digits)));
console.log(
  JSON.stringify({
    runs: total,
    failed,
    wall_s: round(wall, 3),
    runs_per_s: round((total - failed) / wall, 1),
    p50_ms: round(pick(0.5)),
    p99_ms: round(pick(0.99)),
    first_error: firstError,
  }),
);
agent.destroy();
