"""Stage `parity@NAME`: every exported artifact of one model on the test set, against Keras.

Usage: python scripts/parity.py --name cnn --model models/trained/cnn.keras --export models/export/cnn \
           --data data/prepared/cifar10.npz --metrics reports/metrics/export/cnn.json

Each artifact runs where its users run it (TensorFlow, LiteRT, TF.js WASM in Node.js): test
accuracy, top-1 agreement with Keras, largest probability difference, size, latency and
throughput; every .tflite also in MediaPipe's ImageClassifier. TF.js, the slowest, may run on a
stratified sample just large enough that agreeing on all of it shows >= 99.9% agreement at 95%
(`parity.tfjs_sample`: 2,995 images), and on every image once it disagrees on one."""

import argparse
import math
from pathlib import Path

import numpy as np

from cifar import data, export, inference, models, outputs, params
from cifar.targets import FLOAT_AGREEMENT, INT8_ACCURACY_DROP_PP, INT8_SIZE_RATIO

class SCHEMA(params.Section):  # params.yaml `parity`
    batch_size: params.number(int, 1, 65_536)
    latency_runs: params.number(int, 0, 10_000)
    tfjs_sample: params.boolean


def measure(predictor, x, batch_size, latency_runs):
    latency = inference.latency_ms(predictor, x, latency_runs) if latency_runs else None
    probabilities, seconds = inference.predict_batches(predictor, x, batch_size)
    return probabilities, {"latency_ms": latency, "throughput_img_s": len(x) / seconds}


def report(name, key, r):
    against = (f"agreement {r['agreement'] * 100:7.2f}% (>= {r['agreement_lower_95'] * 100:.2f}% at 95%, "
               f"{r['images']:,} images)  max|diff| {r['max_abs_diff']:.1e}" if "agreement" in r
               else "the reference the artifacts are compared with")
    print(f"{name}: {key:<20} accuracy {r['accuracy'] * 100:6.2f}%  {against}  {r['bytes'] / 1e6:6.2f} MB  "
          f"{r['latency_ms'] or 0:6.2f} ms/img  {r['throughput_img_s']:7.0f} img/s")


CONFIDENCE = 0.95  # of the agreement bounds


def sample_size(bound=FLOAT_AGREEMENT, confidence=CONFIDENCE):
    """The fewest images on which full agreement shows >= `bound` at `confidence` (2,995 for 99.9% at 95%)."""
    return math.ceil(math.log(1 - confidence) / math.log(bound))


def stratified(labels, count, seed):
    """Sorted indices of `count` images, stratified and seeded; all if not fewer."""
    from sklearn.model_selection import train_test_split

    if count >= len(labels):
        return np.arange(len(labels))
    chosen, _ = train_test_split(np.arange(len(labels)), train_size=count, stratify=labels, random_state=seed)
    return np.sort(chosen)


def lower_bound(agreeing, images, confidence=CONFIDENCE):
    """One-sided Clopper-Pearson lower bound (scipy)."""
    from scipy.stats import binomtest

    return float(binomtest(agreeing, images, alternative="greater").proportion_ci(confidence).low)


def compare(probabilities, reference, labels):
    predicted = probabilities.argmax(axis=1)
    agreeing = int(np.sum(predicted == reference.argmax(axis=1)))
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "agreement": agreeing / len(labels),
        "agreement_lower_95": lower_bound(agreeing, len(labels)),
        "max_abs_diff": export.max_diff(probabilities, reference),
        "images": int(len(labels)),
    }


def run_sampled(run, path, x, reference, labels, chosen, batch_size, latency_runs):
    """`run` on `chosen`, and on every image if it disagrees with `reference` on one:
    (probabilities, their indices, timing)."""
    probabilities, timing = run(path, x[chosen], batch_size, latency_runs)
    wrong = int(np.sum(probabilities.argmax(axis=1) != reference[chosen].argmax(axis=1)))
    if wrong and len(chosen) < len(x):
        print(f"{path}: disagrees with Keras on {wrong} of {len(chosen):,} sampled images; running every test image")
        rest = np.setdiff1d(np.arange(len(x)), chosen)
        whole = np.empty((len(x), probabilities.shape[1]), probabilities.dtype)
        whole[chosen], (whole[rest], _) = probabilities, run(path, x[rest], batch_size, 0)
        probabilities, chosen = whole, np.arange(len(x))
    return probabilities, chosen, timing


def run_python(path, x, batch_size, latency_runs):
    return measure(inference.load(path), x, batch_size, latency_runs)


RUNTIMES = {"tensorflow": run_python, "tflite": run_python, "node": inference.run_tfjs}  # each format's `runtime`


MEDIAPIPE_IMAGES = 200  # the first test images, as PNG files at the model's side (no resize in MediaPipe)


def mediapipe_check(folder, files, x, litert, classes):
    """MediaPipe's ImageClassifier on each .tflite of `files`, as an app loads it: its top class and
    name on the first MEDIAPIPE_IMAGES test images against LiteRT's."""
    import json
    import subprocess
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        images = [f"{tmp}/{i:04d}.png" for i in range(min(MEDIAPIPE_IMAGES, len(x)))]
        for path, image in zip(images, x):
            Image.fromarray(image.astype(np.uint8)).save(path)
        proc = subprocess.run([*export.mediapipe_command("classify"), "--models",
                               *(str(folder / f) for f in files.values()), "--images", *images],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"MediaPipe's ImageClassifier failed on {folder}:\n{proc.stderr[-3000:]}")
    answer = json.loads(proc.stdout)
    checked = {}
    for key, file in files.items():
        tops = answer["results"][str(folder / file)]
        index = np.array([t[0] for t in tops])
        scores = litert[key][np.arange(len(tops)), index]
        checked[key] = {"mediapipe": answer["mediapipe"], "images": len(tops),
                        "top1_agreement": float(np.mean(index == litert[key][:len(tops)].argmax(axis=1))),
                        "names": all(t[1] == classes[t[0]] for t in tops),
                        "max_score_diff": float(np.max(np.abs(np.array([t[2] for t in tops]) - scores)))}
    return checked


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml models)")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--export", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args()
    loaded = params.load(["shared", "parity"], schemas={"parity": SCHEMA})
    cfg, seed = loaded["parity"], loaded["shared"]["seed"]
    batch, runs = cfg["batch_size"], cfg["latency_runs"]

    name = args.name
    entry, _ = models.entry(name)  # a name the registry does not know stops here
    meta_path = args.export / "metadata.json"
    meta = outputs.read_json(meta_path, f"export@{name}", needs=["artifacts"])
    arrays = data.load_prepared(args.data)
    x, y = arrays["x_test"], arrays["y_test"].astype(np.int64)
    if not len(x):
        raise ValueError(f"{args.data} has no test images to check against")

    # The reference: the Keras model as the artifacts hold it (its temperature, its test-time augmentation).
    temperature = (meta.get("temperature") or {}).get("temperature")
    keras_model = export.shipped(models.load(args.model, stage=models.train_stage(name)), entry["tta"], temperature)
    reference, timing = measure(inference.KerasPredictor(model=keras_model), x, batch, runs)
    # The Keras model is the reference: its row has its accuracy, and no agreement with itself.
    keras_accuracy = float(np.mean(reference.argmax(axis=1) == y))
    results = {"keras": {"accuracy": keras_accuracy, "bytes": args.model.stat().st_size, "images": int(len(y)), **timing}}
    everything = np.arange(len(y))
    report(name, "keras", results["keras"])
    litert = {}  # each .tflite's probabilities on the first test images, for MediaPipe's check
    for key, artifact in meta["artifacts"].items():
        fmt = export.FORMATS_BY_KEY.get(key)
        if fmt is None:
            raise ValueError(f"{meta_path}: unknown artifact '{key}'; rerun `dvc repro --force export@{name}`")
        chosen = stratified(y, sample_size(), seed) if fmt.sampled and cfg["tfjs_sample"] else everything
        probabilities, chosen, timing = run_sampled(RUNTIMES[fmt.runtime], args.export / artifact["file"], x,
                                                    reference, y, chosen, batch, runs)
        sample = {} if len(chosen) == len(y) else {  # Keras on the same images, for the accuracy change
            "keras_accuracy": float(np.mean(reference[chosen].argmax(axis=1) == y[chosen])), "sample": "stratified"}
        results[key] = {**compare(probabilities, reference[chosen], y[chosen]), **sample, "bytes": artifact["bytes"],
                        "target": artifact.get("target", fmt.target), **timing,
                        # which int8 candidate the export chose on val, and whether it is integer-only
                        **{k: artifact[k] for k in ("candidate", "integer_only") if k in artifact}}
        report(name, key, results[key])
        if fmt.runtime == "tflite":
            litert[key] = probabilities[:MEDIAPIPE_IMAGES]
    files = {key: meta["artifacts"][key]["file"] for key in litert}
    for key, check in mediapipe_check(args.export, files, x, litert, meta["classes"]).items():
        results[key]["mediapipe"] = check
        print(f"{name}: {key:<20} MediaPipe {check['mediapipe']} ImageClassifier: top class as LiteRT's on "
              f"{check['top1_agreement'] * 100:.1f}% of {check['images']} images, names "
              f"{'given' if check['names'] else 'MISSING'}, scores within {check['max_score_diff']:.1e}")

    summary = export.targets(results, meta["artifacts"])
    print(f"{name}: float formats agree with Keras on >= {summary['float_agreement_min'] * 100:.2f}% "
          f"(target {FLOAT_AGREEMENT * 100:.1f}%): {'met' if summary['float_agreement_met'] else 'MISSED'}; "
          f"int8 is {summary['int8_size_ratio'] * 100:.1f}% of float32 (target <= {INT8_SIZE_RATIO * 100:.0f}%): "
          f"{'met' if summary['int8_size_met'] else 'MISSED'}; int8 accuracy drop "
          f"{summary['int8_accuracy_drop_pp']:.2f} pp (target <= {INT8_ACCURACY_DROP_PP}): "
          f"{'met' if summary['int8_accuracy_met'] else 'MISSED'}; every TF-Lite file in MediaPipe with its "
          f"class names and LiteRT's top class: {'met' if summary['mediapipe_met'] else 'MISSED'}")
    outputs.write_json(args.metrics, {
        "model": name,
        "test_images": int(len(x)),
        "artifacts": results,
        "targets": summary,
        "hardware": outputs.hardware(),
        "export_stage_s": meta.get("stage_s"),  # export@NAME's, from its metadata.json (it has no metrics file)
        "stage_s": outputs.stage_seconds(),
    })


if __name__ == "__main__":
    outputs.run_stage("parity", main, errors=(ValueError, RuntimeError,))
