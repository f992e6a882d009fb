#!/usr/bin/env node
// Tributary's local Cosmos DB (NoSQL API) stand-in for tests and development.
//
// Starts @vercel/cosmosdb-server (pinned in package.json) on plain HTTP at
// 127.0.0.1 with keep-alive, after wrapping its own request handlers with the
// fixes the Rust SDK (azure_data_cosmos 1.1.0-beta.1) needs:
//   1. partition key range ids are returned as strings (the server sends numbers;
//      the SDK then fails container access with 503/20305);
//   2. a point read of a missing document answers 404 (the server throws -> 500);
//   3. a transactional batch gets the partition key on every operation (the SDK
//      sends it only in the x-ms-documentdb-partitionkey header);
//   4. the account document advertises http:// (the server always says https://,
//      and the SDK follows what the account document says), or the endpoint
//      given with --advertise (a proxy in front, for the fault test).
// Not fixed (server limits): TTL is stored but never enforced; aggregates and
// some ORDER BY forms fail; `value` is a reserved word.
//
// Usage: node start.js [--port N] [--host 127.0.0.1] [--advertise http://HOST:PORT/]
//                      [--tls-cert FILE --tls-key FILE]   (port 0 = any free port)
// With --tls-cert/--tls-key it serves HTTPS with that certificate (a test CA's,
// for the TLS start check, scripts/tls-starts) and advertises https://.
// Prints "cosmosdb-server listening on http(s)://HOST:PORT" once it accepts connections.
"use strict";

const lib = "@vercel/cosmosdb-server/lib";
const server = require(`${lib}/index.js`);
const routes = require(`${lib}/routes.js`);
const json = require(`${lib}/json.js`);
const account = require(`${lib}/account/index.js`);
const pk = require(`${lib}/utils/get-partition-from-header.js`);

function parseArgs(argv) {
  const args = { port: 8081, host: "127.0.0.1" };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === "--port" || a === "-p") args.port = parseInt(argv[++i], 10);
    else if (a === "--host") args.host = argv[++i];
    else if (a === "--advertise") args.advertise = argv[++i];
    else if (a === "--tls-cert") args.tlsCert = argv[++i];
    else if (a === "--tls-key") args.tlsKey = argv[++i];
    else if (a === "--help" || a === "-h") {
      process.stdout.write("usage: node start.js [--port N] [--host 127.0.0.1] [--advertise http://HOST:PORT/]\n");
      process.exit(0);
    } else {
      process.stderr.write(`unknown argument: ${a}\n`);
      process.exit(2);
    }
  }
  if (Boolean(args.tlsCert) !== Boolean(args.tlsKey)) {
    process.stderr.write("--tls-cert and --tls-key go together\n");
    process.exit(2);
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    process.stderr.write("--port must be 0-65535\n");
    process.exit(2);
  }
  return args;
}

// Fix 4: advertise the scheme we actually serve.
const origRead = account.default.prototype.read;
account.default.prototype.read = function read(...a) {
  const doc = origRead.apply(this, a);
  if (!doc || typeof doc !== "object") return doc;
  const advertised = (l) =>
    args.advertise || (args.tlsCert ? String(l.databaseAccountEndpoint) : String(l.databaseAccountEndpoint).replace(/^https:/, "http:"));
  const fix = (locs) => (locs || []).map((l) => ({ ...l, databaseAccountEndpoint: advertised(l) }));
  return { ...doc, writableLocations: fix(doc.writableLocations), readableLocations: fix(doc.readableLocations) };
};

// Fix 3: a batch request body gets the header's partition key on each operation.
const origJson = json.default;
json.default = async (req) => {
  const body = await origJson(req);
  const isBatch = String(req.headers["x-ms-cosmos-is-batch-request"] || "").toLowerCase() === "true";
  const header = pk.default(req);
  if (isBatch && Array.isArray(body) && header) {
    for (const op of body) {
      if (op && typeof op === "object" && op.partitionKey === undefined) op.partitionKey = header;
    }
  }
  return body;
};

// Fixes 1 and 2 wrap the routed handlers.
const origRoute = routes.default;
routes.default = (req) => {
  const route = origRoute(req);
  if (!route) return route;
  const [params, handler] = route;
  const wrapped = async (acct, rq, res, p) => {
    if (rq.method === "GET" && p.docId !== undefined && p.collId !== undefined) {
      const coll = acct.database(p.dbId).collection(p.collId);
      if (coll.read()) {
        let key;
        try {
          key = pk.parsePartitionKey(pk.default(rq), p.docId);
        } catch (e) {
          key = p.docId;
        }
        if (!coll.document(p.docId, key).read()) {
          res.statusCode = 404;
          return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
        }
      }
    }
    const body = await handler(acct, rq, res, p);
    if (body && Array.isArray(body.PartitionKeyRanges)) {
      body.PartitionKeyRanges = body.PartitionKeyRanges.map((r) => ({ ...r, id: String(r.id) }));
    }
    return body;
  };
  return [params, wrapped];
};

const args = parseArgs(process.argv.slice(2));
const fs = require("fs");
const srv = args.tlsCert
  ? server.createHttpsServer({
      keepAlive: true,
      cert: fs.readFileSync(args.tlsCert),
      key: fs.readFileSync(args.tlsKey),
      minVersion: "TLSv1.2",
    })
  : server.createHttpServer({ keepAlive: true });
srv.keepAliveTimeout = 65000;
srv.on("error", (e) => {
  process.stderr.write(`cosmosdb-server: ${e.message}\n`);
  process.exit(1);
});
srv.listen(args.port, args.host, () => {
  const { address, port } = srv.address();
  process.stdout.write(`cosmosdb-server listening on ${args.tlsCert ? "https" : "http"}://${address}:${port}\n`);
});
const stop = () => srv.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
