// The Restate side of scripts/bench-peers: a service `stamp` whose handler
// `run` takes a JSON object and runs three `ctx.run` steps, s1, s2 and s3,
// each returning its input with one field (named after the step) added.
// Every ctx.run result is journaled by restate-server before the handler
// goes on, so each step's output is checkpointed before the next starts.
//
//   node restate-service.mjs PORT      (listens on 127.0.0.1:PORT, HTTP/2)
//
// Resolved from the node_modules of the current directory (the bench's
// temporary folder), not from this file's folder.
import { createRequire } from "node:module";
import * as http2 from "node:http2";
import * as path from "node:path";

// The SDK (1.17) calls Promise.withResolvers, which Node has from 22 on;
// Node 20 gets this stand-in, which does the same.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const require = createRequire(path.join(process.cwd(), "noop.js"));
const restate = require("@restatedev/restate-sdk");

const stamp = (input, field) => ({ ...input, [field]: true });

const service = restate.service({
  name: "stamp",
  handlers: {
    run: async (ctx, input) => {
      let value = await ctx.run("s1", () => stamp(input, "s1"));
      value = await ctx.run("s2", () => stamp(value, "s2"));
      value = await ctx.run("s3", () => stamp(value, "s3"));
      return value;
    },
  },
});

const port = Number(process.argv[2] || 9080);
const server = http2.createServer(restate.createEndpointHandler({ services: [service] }));
server.listen(port, "127.0.0.1", () => console.log(`restate service listening on 127.0.0.1:${port}`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  // Not server.close(): restate-server keeps its HTTP/2 connection open.
  process.on(signal, () => process.exit(0));
}
