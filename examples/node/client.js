#!/usr/bin/env node
// A datamill client in Node.js with @grpc/grpc-js, from the same protos/ as the Python stubs.
//
//   node examples/node/client.js [target]        (default $DATAMILL_TARGET or 127.0.0.1:50051)
//
// It generates a small dataset, watches the job to the end over the WatchJob stream, exports it as CSV,
// reads the file back with ReadObject, and shows that a bad request is refused with google.rpc details.
// It prints one JSON line with what it saw, and exits non-zero on anything unexpected.
// With DATAMILL_TOKEN set, every call carries `authorization: Bearer $DATAMILL_TOKEN`.
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const ROOT = path.resolve(__dirname, "..", "..");
const INCLUDE = [path.join(ROOT, "protos"), path.join(ROOT, "third_party", "googleapis")];
const LOADER = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: INCLUDE };

const definition = protoLoader.loadSync(
  ["datamill/v1/job_service.proto", "datamill/v1/dataset_service.proto"],
  LOADER,
);
const v1 = grpc.loadPackageDefinition(definition).datamill.v1;

// google.rpc.Status and its details, to decode `grpc-status-details-bin`.
const details = new protobuf.Root();
details.resolvePath = (_origin, target) => {
  for (const dir of INCLUDE) {
    const candidate = path.join(dir, target);
    if (require("node:fs").existsSync(candidate)) return candidate;
  }
  return target;
};
details.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = details.lookupType("google.rpc.Status");

function metadata() {
  const md = new grpc.Metadata();
  if (process.env.DATAMILL_TOKEN) md.set("authorization", `Bearer ${process.env.DATAMILL_TOKEN}`);
  return md;
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline: Date.now() + 30_000 }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

// Subscribe to one job and resolve with the job as of its terminal event.
function watch(jobs, jobId) {
  return new Promise((resolve, reject) => {
    const call = jobs.WatchJob(metadata());
    let last = null;
    let events = 0;
    call.on("data", (message) => {
      if (message.message === "event") {
        events += 1;
        last = message.event.job;
      } else if (message.message === "ended") {
        call.end();
        if (message.ended.reason !== "WATCH_END_REASON_TERMINAL") reject(new Error(`watch ended: ${message.ended.reason}`));
        else resolve({ job: last, events });
      }
    });
    call.on("error", reject);
    call.write({ subscribe: { job_id: jobId } });
  });
}

function readObject(datasets, key) {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash("sha256");
    let size = 0;
    const call = datasets.ReadObject({ object_key: key }, metadata());
    call.on("data", (chunk) => {
      hash.update(chunk.data);
      size += chunk.data.length;
    });
    call.on("error", reject);
    call.on("end", () => resolve({ size, sha256: hash.digest("hex") }));
  });
}

function decodeDetails(err) {
  const [raw] = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (!raw) return null;
  const status = Status.decode(raw);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const type = details.lookupType(any.type_url.split("/").pop());
      return { type: type.fullName.slice(1), value: type.toObject(type.decode(any.value), { enums: String }) };
    }),
  };
}

function fail(message) {
  console.error(`datamill example: ${message}`);
  process.exit(1);
}

async function main() {
  const target = process.argv[2] || process.env.DATAMILL_TARGET || "127.0.0.1:50051";
  const credentials = grpc.credentials.createInsecure();
  const jobs = new v1.JobService(target, credentials);
  const datasets = new v1.DatasetService(target, credentials);
  const name = `node_${crypto.randomBytes(4).toString("hex")}`;

  const schema = {
    rows: 500,
    seed: 7,
    fields: [
      { name: "id", type: "uuid4" },
      // google.protobuf.Struct comes from protobufjs's bundled well-known types, whose fields are camelCase.
      { name: "n", type: "integer", params: { fields: { min: { numberValue: 1 }, max: { numberValue: 9 } } } },
      { name: "email", type: "email" },
    ],
  };
  const generated = (await unary(jobs, "Generate", { dataset_name: name, schema })).job;
  const watched = await watch(jobs, generated.id);
  if (watched.job.state !== "JOB_STATE_SUCCEEDED") fail(`generate ended ${watched.job.state}`);
  const fetched = (await unary(jobs, "GetJob", { job_id: generated.id })).job;

  const exported = (await unary(jobs, "Export", { dataset: name, format: "FILE_FORMAT_CSV" })).job;
  const exportDone = (await watch(jobs, exported.id)).job;
  if (exportDone.state !== "JOB_STATE_SUCCEEDED") fail(`export ended ${exportDone.state}`);
  const result = exportDone.export;
  const read = await readObject(datasets, result.object_key);
  if (read.sha256 !== result.sha256 || String(read.size) !== String(result.size_bytes)) {
    fail(`read ${read.size} bytes with sha256 ${read.sha256}, the job says ${result.size_bytes} and ${result.sha256}`);
  }

  let refused = null;
  try {
    await unary(jobs, "Generate", { dataset_name: "", schema: { rows: 0, fields: [] } });
    fail("an empty Generate was accepted");
  } catch (err) {
    refused = { code: grpc.status[err.code], status: decodeDetails(err) };
  }

  console.log(
    JSON.stringify({
      generate: { id: generated.id, state: fetched.state, rows: fetched.generate.row_count, events: watched.events },
      export: { id: exported.id, key: result.object_key, size: read.size, sha256: read.sha256 },
      refused,
    }),
  );
  jobs.close();
  datasets.close();
}

main().catch((err) => fail(err.stack || String(err)));
