// The demo page: load a TF.js graph model and classify the image the user picks or drops, on
// WebGL where the browser has a hardware GPU, else on WASM (multi-threaded when the server sends
// the cross-origin isolation headers, as scripts/tools/serve.py does). Preprocessing matches scripts/tools/predict.py: composite on white, turn upright as
// its EXIF orientation says (the browser does this when it decodes), take the largest centred
// square, scale it to the model's side (models/index.json: 32 for CIFAR-10); the model does its
// own 0-255 scaling.
"use strict";

// As scripts/cifar/inference.py's MAX_PIXELS: larger images are refused before they are drawn.
const MAX_PIXELS = 40000000;
const els = Object.fromEntries(
  ["model", "status", "drop", "file", "result", "preview", "filename", "input", "side", "classes", "top3", "timing",
    "error"]
    .map((id) => [id, document.getElementById(id)]),
);
let models = [];
let current = null; // {name, classes, side, graph, loadMs}
let lastImage = null;
let renderer = null; // the WebGL renderer, when the page runs on WebGL

function status(text, state) {
  els.status.textContent = text;
  els.status.dataset.state = state;
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = false;
  els.result.dataset.state = "error";
}

async function loadModel(name) {
  const info = models.find((m) => m.name === name);
  status(`Loading ${name}…`, "loading");
  els.model.disabled = true;
  try {
    const started = performance.now();
    const graph = await tf.loadGraphModel(info.url);
    // One prediction before the first visible one: the backend compiles its kernels then.
    const warm = tf.tidy(() => graph.predict(tf.zeros([1, info.side, info.side, 3])));
    await warm.data();
    warm.dispose();
    const loadMs = performance.now() - started;
    if (current) current.graph.dispose();
    current = { name, classes: info.classes, side: info.side, graph, loadMs };
    // What this model was trained on: its classes, and the side its input canvas is drawn at.
    els.classes.textContent = info.classes.join(", ");
    els.input.width = els.input.height = info.side;
    els.side.textContent = `${info.side}×${info.side}`;
    status(`${name} ready in ${Math.round(loadMs)} ms (TF.js ${tf.version.tfjs}, ${backendLabel()})`, "ready");
    els.status.dataset.model = name;
    if (lastImage) await classify(lastImage.image, lastImage.label);
  } catch (err) {
    status(`Could not run ${name}: ${err.message}`, "error");
  } finally {
    els.model.disabled = false;
  }
}

function toInput(image) {
  const ctx = els.input.getContext("2d");
  const width = image.naturalWidth || image.width;
  const height = image.naturalHeight || image.height;
  const side = Math.min(width, height);
  ctx.fillStyle = "#fff";
  const target = current.side;
  ctx.fillRect(0, 0, target, target);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(image, (width - side) / 2, (height - side) / 2, side, side, 0, 0, target, target);
}

function backendLabel() {
  if (tf.getBackend() === "wasm") return `wasm backend, ${tf.wasm.getThreadsCount()} thread(s)`;
  return renderer ? `${tf.getBackend()} backend, ${renderer}` : `${tf.getBackend()} backend`;
}

// The model input canvas through the current model: class probabilities (what one
// classification costs the user: reading the pixels, the network, the result back).
async function predictInput() {
  const y = tf.tidy(() => current.graph.predict(tf.browser.fromPixels(els.input).toFloat().expandDims(0)));
  const probabilities = await y.data();
  y.dispose();
  return probabilities;
}

async function classify(image, label) {
  toInput(image);
  const started = performance.now();
  const probabilities = await predictInput();
  const ms = performance.now() - started;
  const ranked = Array.from(probabilities, (p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  els.top3.replaceChildren(...ranked.map(([p, i]) => {
    const li = document.createElement("li");
    li.dataset.class = current.classes[i];
    li.dataset.probability = String(p);
    const name = Object.assign(document.createElement("span"), { className: "class", textContent: current.classes[i] });
    const track = document.createElement("span");
    const bar = Object.assign(document.createElement("span"), { className: "bar" });
    bar.style.display = "block";
    bar.style.width = `${(p * 100).toFixed(1)}%`;
    track.append(bar);
    const pct = Object.assign(document.createElement("span"), { className: "pct", textContent: `${(p * 100).toFixed(1)}%` });
    li.append(name, track, pct);
    return li;
  }));
  els.filename.textContent = label;
  els.error.hidden = true;
  els.result.hidden = false;
  els.result.dataset.model = current.name;
  els.result.dataset.top1 = current.classes[ranked[0][1]];
  els.result.dataset.latencyMs = String(ms);
  els.timing.textContent = `classified in ${ms.toFixed(0)} ms by ${current.name}`;
  els.result.dataset.state = "done";
}

// WebGL's renderer if the browser has a hardware GPU; null for none or a software one
// (SwiftShader, llvmpipe), where WASM is faster.
function hardwareWebGL() {
  const gl = document.createElement("canvas").getContext("webgl2");
  if (!gl) return null;
  const debug = gl.getExtension("WEBGL_debug_renderer_info");
  const name = String(gl.getParameter(debug ? debug.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
  return /swiftshader|llvmpipe|softpipe|software|basic render/i.test(name) ? null : name;
}

// For measurement (scripts/cifar/page.py, from the parity stage): the current model on the
// model input canvas `runs` times, after one untimed run; the median, and where it ran.
window.demo = {
  async benchmark(runs) {
    if (!current) throw new Error("no model is loaded");
    await predictInput();
    const times = [];
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      await predictInput();
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return {
      model: current.name, runs, latency_ms: times[Math.floor(runs / 2)], load_ms: current.loadMs,
      backend: tf.getBackend(), threads: tf.getBackend() === "wasm" ? tf.wasm.getThreadsCount() : null,
      renderer, cross_origin_isolated: Boolean(window.crossOriginIsolated), tfjs: tf.version.tfjs,
      user_agent: navigator.userAgent,
    };
  },
};

async function handleFile(file) {
  if (!file) return;
  els.result.dataset.state = "working";
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  try {
    await image.decode();
  } catch {
    URL.revokeObjectURL(url);
    showError(`${file.name} is not an image this browser can read.`);
    return;
  }
  const pixels = image.naturalWidth * image.naturalHeight;
  if (pixels > MAX_PIXELS) {
    URL.revokeObjectURL(url);
    showError(`image too large: ${image.naturalWidth}x${image.naturalHeight} is ${pixels.toLocaleString("en")} pixels, `
      + `over the limit of ${MAX_PIXELS.toLocaleString("en")}; scale it down first.`);
    return;
  }
  if (els.preview.src.startsWith("blob:")) URL.revokeObjectURL(els.preview.src);
  els.preview.src = url;
  lastImage = { image, label: `${file.name}, ${image.naturalWidth}×${image.naturalHeight}` };
  if (!current) {
    showError("No model is loaded yet.");
    return;
  }
  try {
    await classify(image, lastImage.label);
  } catch (err) {
    showError(`Could not classify ${file.name}: ${err.message}`);
  }
}

// XNNPACK's thread count for the WASM backend. TF.js's own choice is half the logical cores (it
// assumes two hyperthreads per core), 1 to 4; on a 2- or 3-core machine that is one thread, and
// two run the fast model's page latency 1.5x faster (docs/export.md). So: at least 2 where there
// are 2 cores, else TF.js's choice. `?threads=N` in the page's address sets it, to compare.
function wasmThreads() {
  const asked = Number(new URLSearchParams(location.search).get("threads"));
  if (Number.isInteger(asked) && asked >= 1) return Math.min(asked, 8);  // 8: the build's worker pool
  const cores = navigator.hardwareConcurrency || 1;
  return Math.min(cores, 4, Math.max(2, Math.floor(cores / 2)));
}

// tf.setBackend("wasm") with `threads` XNNPACK threads. The WASM module caps the count at
// navigator.hardwareConcurrency / 2, read once as it starts (tfjs-backend-wasm's backend.cc,
// `num_cores`), whatever tf.wasm.setThreadsCount asks; TF.js has no option to lift the cap. So
// while the module starts, the page shows it a core count that admits `threads`, then removes
// that override: everything after sees the browser's own number again.
async function startWasm(threads) {
  const shown = threads > Math.floor((navigator.hardwareConcurrency || 1) / 2);
  if (shown) Object.defineProperty(navigator, "hardwareConcurrency", {get: () => 2 * threads, configurable: true});
  try {
    tf.wasm.setThreadsCount(threads);
    return await tf.setBackend("wasm");
  } finally {
    if (shown) delete navigator.hardwareConcurrency;
  }
}

async function init() {
  try {
    renderer = hardwareWebGL();
    if (!renderer || !(await tf.setBackend("webgl"))) {
      renderer = null;
      // Cross-origin isolated (serve.py's headers), TF.js loads its multi-threaded SIMD build.
      tf.wasm.setWasmPaths(new URL("vendor/tfjs-backend-wasm/", document.baseURI).href);
      if (!(await startWasm(wasmThreads()))) throw new Error("the WASM backend did not start");
    }
    await tf.ready();
    models = await (await fetch("models/index.json")).json();
  } catch (err) {
    status(`Could not start: ${err.message}`, "error");
    return;
  }
  if (!models.length) {
    status("No TF.js model is exported yet: run `make export`, then reload.", "error");
    return;
  }
  // The server lists the most accurate model first; it is the one loaded.
  // Each model's test accuracy, and on corrupted photos (noise, blur, weather, JPEG: the
  // robustness stage's suite) where measured, so a visitor can pick for pictures from the wild.
  const pct = (value) => `${(value * 100).toFixed(1)}%`;
  const optionText = (m) => {
    if (m.accuracy == null) return m.label;
    const corrupted = m.corrupted_accuracy != null ? `, ${pct(m.corrupted_accuracy)} on corrupted photos` : "";
    return `${m.label} (${pct(m.accuracy)}${corrupted})`;
  };
  els.model.replaceChildren(...models.map((m) => new Option(optionText(m), m.name)));
  els.model.addEventListener("change", () => loadModel(els.model.value));
  els.file.addEventListener("change", () => handleFile(els.file.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("over"));
  }
  els.drop.addEventListener("drop", (e) => { e.preventDefault(); handleFile(e.dataTransfer.files[0]); });
  await loadModel(models[0].name);
}

init();
