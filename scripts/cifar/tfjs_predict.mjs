// Run a TF.js graph model in Node.js on the WASM backend: class probabilities for a file of
// raw images, plus single-image latency and batch throughput. The `parity` stage calls this.
//
// Usage: node scripts/cifar/tfjs_predict.mjs --model DIR/model.json --images X.u8 --count N \
//            --out PROBS.f32 [--side 32] [--batch 256] [--latency-runs 50]
// X.u8: N x side x side x 3 uint8 RGB, row-major. PROBS.f32: N x classes float32, little-endian.
// Prints one JSON line: backend, threads, latency_ms, throughput_img_s.
//
// The model is read with fs and handed to tf.io.fromMemory, since pure tfjs (no tfjs-node,
// which cannot install offline) has no file:// loader.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import * as tf from "@tensorflow/tfjs";
import { getThreadsCount } from "@tensorflow/tfjs-backend-wasm";

const { values: args } = parseArgs({
  options: {
    model: { type: "string" },
    images: { type: "string" },
    count: { type: "string" },
    out: { type: "string" },
    side: { type: "string", default: "32" },
    batch: { type: "string", default: "256" },
    "latency-runs": { type: "string", default: "50" },
  },
});

function fail(message) {
  console.error(`tfjs_predict: error: ${message}`);
  process.exit(2);
}

for (const key of ["model", "images", "count", "out"]) {
  if (!args[key]) fail(`--${key} is required`);
}

async function loadGraphModel(modelJson) {
  let spec;
  try {
    spec = JSON.parse(fs.readFileSync(modelJson, "utf8"));
  } catch (err) {
    fail(`${modelJson}: not a readable model.json (${err.message})`);
  }
  if (spec.format !== "graph-model") fail(`${modelJson}: format is ${spec.format}, expected graph-model`);
  const dir = path.dirname(modelJson);
  const weightSpecs = [];
  const shards = [];
  for (const group of spec.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const shard of group.paths) shards.push(fs.readFileSync(path.join(dir, shard)));
  }
  const joined = Buffer.concat(shards);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  return tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: spec.modelTopology,
    weightSpecs,
    weightData,
    format: spec.format,
    generatedBy: spec.generatedBy,
    convertedBy: spec.convertedBy,
    signature: spec.signature,
    userDefinedMetadata: spec.userDefinedMetadata,
    modelInitializer: spec.modelInitializer,
  }));
}

if (!(await tf.setBackend("wasm"))) fail("the WASM backend did not initialise");
await tf.ready();

const model = await loadGraphModel(args.model);
const count = Number(args.count);
const batch = Number(args.batch);
const pixels = fs.readFileSync(args.images);
const side = Number(args.side);
const perImage = side * side * 3;
if (pixels.length !== count * perImage) {
  fail(`${args.images}: ${pixels.length} bytes, expected ${count} images x ${perImage}`);
}

function predict(start, n) {
  return tf.tidy(() => {
    const x = tf.tensor4d(pixels.subarray(start * perImage, (start + n) * perImage), [n, side, side, 3], "int32")
      .toFloat();
    return model.predict(x);
  });
}

// Warm up (kernel set-up, weight upload), then time single images and whole batches.
predict(0, 1).dispose();
const runs = Number(args["latency-runs"]);
const latencies = [];
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const y = predict(i % count, 1);
  await y.data();
  latencies.push(performance.now() - t0);
  y.dispose();
}
latencies.sort((a, b) => a - b);

const chunks = [];
const t0 = performance.now();
for (let start = 0; start < count; start += batch) {
  const y = predict(start, Math.min(batch, count - start));
  chunks.push(await y.data());
  y.dispose();
}
const seconds = (performance.now() - t0) / 1000;
const total = chunks.reduce((sum, c) => sum + c.length, 0);
const probs = new Float32Array(total);
let offset = 0;
for (const c of chunks) {
  probs.set(c, offset);
  offset += c.length;
}
fs.writeFileSync(args.out, Buffer.from(probs.buffer));
console.log(JSON.stringify({
  backend: tf.getBackend(),
  tfjs: tf.version.tfjs,
  threads: getThreadsCount(),
  latency_ms: runs ? latencies[Math.floor(runs / 2)] : null,
  throughput_img_s: count / seconds,
}));
