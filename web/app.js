// The demo page: load a TF.js graph model on the WASM backend and classify the image the user
// picks or drops. Preprocessing matches scripts/tools/predict.py: composite on white, turn upright as
// its EXIF orientation says (the browser does this when it decodes), take the largest centred
// square, scale it to 32x32; the model does its own 0-255 scaling.
"use strict";

const SIDE = 32;
// As scripts/cifar/inference.py's MAX_PIXELS: larger images are refused before they are drawn.
const MAX_PIXELS = 40000000;
const els = Object.fromEntries(
  ["model", "status", "drop", "file", "result", "preview", "filename", "input", "top3", "error"]
    .map((id) => [id, document.getElementById(id)]),
);
let models = [];
let current = null; // {name, classes, graph}
let lastImage = null;

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
    const graph = await tf.loadGraphModel(info.url);
    if (current) current.graph.dispose();
    current = { name, classes: info.classes, graph };
    status(`${name} ready (TF.js ${tf.version.tfjs}, ${tf.getBackend()} backend)`, "ready");
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
  ctx.fillRect(0, 0, SIDE, SIDE);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(image, (width - side) / 2, (height - side) / 2, side, side, 0, 0, SIDE, SIDE);
}

async function classify(image, label) {
  toInput(image);
  const probabilities = await tf.tidy(() => {
    const x = tf.browser.fromPixels(els.input).toFloat().expandDims(0);
    return current.graph.predict(x);
  }).data();
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
  els.result.dataset.state = "done";
}

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

async function init() {
  try {
    tf.wasm.setWasmPaths(new URL("vendor/tfjs-backend-wasm/", document.baseURI).href);
    if (!(await tf.setBackend("wasm"))) throw new Error("the WASM backend did not start");
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
  const optionText = (m) => (m.accuracy ? `${m.label} (${(m.accuracy * 100).toFixed(1)}%)` : m.label);
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
