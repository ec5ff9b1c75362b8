"""Benchmark: the augmented training stream and CNN training throughput, against the seed's path.

Usage: python studies/bench/bench.py --archive data/raw/cifar-10-python.tar.gz --out studies/bench/bench.json

All measurements use the same real CIFAR-10 training images in the same run:
- augmentation alone: the seed's Keras ImageDataGenerator(rotation 15, shifts 0.1, horizontal
  flip, preprocessing_function=random_resolution_transform).flow(x / 255.0, batch_size=64)
  against cifar.augment.train_dataset (OpenCV in parallel tf.data map calls, prefetch), timed
  over whole passes after a warm-up pass, best of `--repeats`;
- CNN training img/s (the seed's CNN, batch 64) fed by our augmented stream, by the plain
  images, and by the seed's ImageDataGenerator, each timed over `--train-steps` steps after a
  warm-up;
- every model of the registry, trained with its own batch size, recipe and augmentation, in
  alternating rounds, in float32 and in each low precision this machine computes natively
  (bfloat16 on an AMX-BF16 or AVX512-BF16 CPU): img/s, and GFLOP/s (3 x the forward pass's
  Conv/Dense FLOPs) as a fraction of that precision's ceilings, a matrix multiply and a 3x3
  convolution measured in the same run;
- each model's predicted training time (its epochs / its img/s, in its own precision) against the
  seed CNN's in its own precision, and against the seed's recipe as the seed wrote it (its CNN
  read literally, one convolution per block, in float32: SEED_RECIPE, measured in the same
  rounds), with that recipe's predicted time on the pipeline's training split;
- the usual speed levers for the two CNNs (LEVERS: oneDNN off, intra-op threads = cores with one
  inter-op thread, steps_per_execution 8, half and double batch; for the fast models, fused
  BatchNormalization in training), each in a process of its own,
  alternating with the default, as img/s and as a ratio to the default of the same round.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/: the cifar package

import cifar  # noqa: F401  (first: it quiets TensorFlow's start-up lines)
import keras

from cifar import augment, data, models, outputs, params, tta
from ceilings import bench_precisions, forward_flops, matmul_gflops, precision_ceilings  # noqa: E402 (beside this file)
from rates import (measure, seed_stream, steady_images_per_second, stream_images_per_second,  # noqa: E402
                   training_images_per_second)


def registry_models(x_train, only=None, overrides=None, precision=None, section_overrides=None):
    """{name: (model compiled with its own recipe, train_cfg, augment_cfg)} for every registered
    model (or the one named `only`), from its plan (cifar.models.plan), as its stage trains it:
    the first phase's model and settings, with the plan's epochs in all; its train settings
    updated with `overrides` (a lever's steps_per_execution or jit_compile), its params section
    with `section_overrides` (a lever's architecture setting, as fused BatchNormalization). Built in `precision`
    (a Keras dtype policy), or in the model's own (its train settings' `precision`, resolved for
    this machine). A model that starts from pretrained weights starts from random ones here: the
    cost of a step does not depend on them."""
    from cifar import training

    loaded = params.load(["models", "shared"])
    found = {}
    for name, entry in loaded["models"].items():
        if only and name != only:
            continue
        _, section = models.entry(name)
        section = params.merged(section, section_overrides or {})
        plan = models.plan(entry, section)
        first = plan.phases[0]
        train = {**first.train, "epochs": plan.epochs, **(overrides or {})}
        policy = precision or training.precision.resolve(train.get("precision", "float32"))[0]
        train["precision"] = policy
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = first.build({"x_train": x_train, "class_names": data.CLASS_NAMES}, None)  # CIFAR-10: the archive it reads
            training.compile_for(model, train, augment.steps_per_epoch(len(x_train), train["batch_size"]), plan.recipe)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        found[name] = (model, train, plan.augment)
    return found


# The seed's recipe as the seed wrote it, what every time ratio is against: the seed CNN read
# literally (one convolution per block), in float32. The baseline does not move when the seed
# CNN's default does (two convolutions per block since the fidelity study, studies/fidelity/).
SEED_RECIPE = {"model": "cnn", "section": {"convs_per_block": 1}, "precision": "float32"}


def models_training_rates(x, onehot, seed, images_per_round, rounds, precisions=("float32",)):
    """Training img/s of every registered model in each of `precisions`, with its own batch size,
    recipe and augmented stream, and of the seed's recipe (SEED_RECIPE), measured in alternating
    rounds (A, A', B, B', C, C', A, ...) so that the machine's drift touches all alike; the
    median round of each. Returns ({name: ({precision: img/s}, its augmented stream alone in
    img/s, (model, train, augment) in the model's own precision)}, the seed recipe's (img/s,
    (model, train, augment)))."""
    built = {p: registry_models(x, precision=p) for p in precisions}
    own = registry_models(x)
    names = list(own)
    recipe = registry_models(x, only=SEED_RECIPE["model"], precision=SEED_RECIPE["precision"],
                             section_overrides=SEED_RECIPE["section"])[SEED_RECIPE["model"]]
    recipe_rates = []
    streams = {}
    for name in names:
        _, train, aug = own[name]
        streams[name] = augment.train_dataset(x, onehot, train["batch_size"], seed, aug, epochs=10_000)
        for p in precisions:
            built[p][name][0].fit(streams[name], epochs=1, steps_per_epoch=2, verbose=0)  # tracing, thread pools
    rates = {name: {p: [] for p in precisions} for name in names}
    fed = {name: [] for name in names}
    served = inference_models(built["float32"] if "float32" in built else registry_models(x, precision="float32"))
    inferred = {name: {kind: [] for kind in served[name]} for name in names}
    for _ in range(rounds):
        for name in names:
            _, train, aug = own[name]
            steps = max(3, images_per_round // train["batch_size"])
            for p in precisions:
                rates[name][p].append(steady_images_per_second(built[p][name][0], streams[name], steps,
                                                               train["batch_size"]))
            # The same stream, made anew, alone: how fast augmentation could feed this model.
            alone = augment.train_dataset(x, onehot, train["batch_size"], seed, aug, epochs=10_000)
            fed[name].append(stream_images_per_second(alone, steps, train["batch_size"]))
            for kind, model in served[name].items():
                inferred[name][kind].append(inference_images_per_second(model, x[:max(512, images_per_round // 4)]))
        batch = recipe[1]["batch_size"]
        recipe_rates.append(steady_images_per_second(recipe[0], streams[SEED_RECIPE["model"]],
                                                     max(3, images_per_round // batch), batch))
    return ({name: ({p: statistics.median(r) for p, r in rates[name].items()}, statistics.median(fed[name]), own[name],
                    {kind: statistics.median(r) for kind, r in inferred[name].items()})
             for name in names}, (statistics.median(recipe_rates), recipe))


def inference_models(float32_models):
    """{name: {"plain": the model, "shipped": with its registry test-time augmentation}}: as
    evaluate, robustness and parity run them, in float32 (cifar.models.load's precision)."""
    registry = params.load(["models"])["models"]
    return {name: {"plain": model, **({"shipped": tta.wrap(model, registry[name]["tta"])} if registry[name]["tta"] else {})}
            for name, (model, _, _) in float32_models.items()}


def inference_images_per_second(model, images):
    """img/s of cifar.evaluation.predict (every later stage's Keras inference), after a warm-up."""
    from cifar import evaluation

    evaluation.predict(model, images[:256])
    start = time.perf_counter()
    evaluation.predict(model, images)
    return len(images) / (time.perf_counter() - start)


# The usual speed levers, each measured against the default in a process of its own (threading
# and oneDNN are fixed when TensorFlow starts): (environment, settings for the probe).
LEVERS = {
    "default": ({}, {}),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "threads_intra_cores_inter_1": ({}, {"intra_op": "cores", "inter_op": 1}),
    "steps_per_execution_8": ({}, {"steps_per_execution": 8}),
    "xla": ({}, {"jit_compile": True}),
    "half_batch": ({}, {"batch_scale": 0.5}),
    "double_batch": ({}, {"batch_scale": 2.0}),
    # Models whose params section has the key only (the fast ones): TF's fused kernel in training.
    "fused_batchnorm": ({}, {"section": {"batchnorm": "fused"}}),
    # No whitening bias: what its backward pass costs. Its gradient is zeroed after its epochs, not
    # cut, so every step pays it (the backward of the first conv group down to the whitening).
    "whiten_bias_off": ({}, {"section": {"train": {"whiten_bias_epochs": 0}}}),
}


def lever_applies(name, settings):
    """Whether a lever's settings apply to the model `name`: a section setting only where its
    params section has that key (nested keys too: {"train": {"whiten_bias_epochs": 0}})."""

    def has(section, keys):
        return all(key in section and (not isinstance(value, dict) or
                                       (isinstance(section[key], dict) and has(section[key], value)))
                   for key, value in keys.items())

    return has(models.entry(name)[1], settings.get("section", {}))


def probe(args):
    """One lever's training img/s for one model (run in its own process by `levers`): the
    model with its recipe and augmentation, after a warm-up, over --model-images images."""
    import json
    import os

    import tensorflow as tf

    settings = json.loads(args.probe_settings)
    cores = os.cpu_count() or 1
    if "intra_op" in settings:
        tf.config.threading.set_intra_op_parallelism_threads(cores if settings["intra_op"] == "cores" else settings["intra_op"])
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter_op"])
    x, y = load_images(args)
    onehot = keras.utils.to_categorical(y, data.NUM_CLASSES)
    recipe_settings = {key: settings[key] for key in ("steps_per_execution", "jit_compile") if key in settings}
    model, train, aug = registry_models(x, only=args.probe, overrides=recipe_settings, precision=settings.get("precision"),
                                        section_overrides=settings.get("section"))[args.probe]
    batch = max(1, int(train["batch_size"] * settings.get("batch_scale", 1)))
    stream = augment.train_dataset(x, onehot, batch, 0, aug, epochs=10_000)
    warm = max(2, settings.get("steps_per_execution", 1))
    model.fit(stream, epochs=1, steps_per_epoch=warm, verbose=0)
    steps = max(2 * warm, args.model_images // batch // warm * warm)
    rate = steady_images_per_second(model, stream, steps, batch, settings.get("steps_per_execution", 1))
    print(json.dumps({"img_per_s": rate, "batch_size": batch}))


def levers(args, names, rounds, chosen=None):
    """Every lever against the default, for each model, in alternating rounds of separate
    processes; the median of each lever's img/s over the default's in the same round."""
    import json
    import os
    import subprocess

    chosen = {"default", *(chosen or LEVERS)}
    unknown = sorted(chosen - set(LEVERS))
    if unknown:
        sys.exit(f"bench: error: unknown lever {unknown[0]!r}; known: {', '.join(LEVERS)}")
    results = {}
    for name in names:
        applies = [lever for lever in LEVERS if lever in chosen and lever_applies(name, LEVERS[lever][1])]
        ratios = {lever: [] for lever in applies if lever != "default"}
        rates = {lever: [] for lever in applies}
        for _ in range(rounds):
            for lever in applies:
                env, settings = LEVERS[lever]
                command = [sys.executable, __file__, "--archive", str(args.archive), "--out", str(args.out),
                           "--images", str(args.images), "--model-images", str(args.model_images),
                           "--probe", name, "--probe-settings", json.dumps(settings)]
                if args.sha256:
                    command += ["--sha256", args.sha256]
                proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
                if proc.returncode != 0:
                    sys.exit(f"bench: error: the {lever} probe of {name} failed:\n{proc.stderr[-2000:]}")
                rates[lever].append(json.loads(proc.stdout.strip().splitlines()[-1])["img_per_s"])
            for lever in ratios:
                ratios[lever].append(rates[lever][-1] / rates["default"][-1])
        results[name] = {"default_img_per_s": round(statistics.median(rates["default"]), 1), **{
            lever: {"img_per_s": round(statistics.median(rates[lever]), 1),
                    "vs_default": round(statistics.median(ratios[lever]), 3)} for lever in ratios}}
    return results


def training_images():
    """How many images the pipeline trains on: CIFAR-10's 50,000 less prepare's val split, or its
    train_limit."""
    import math

    prepare = params.load(["prepare"])["prepare"]
    total = prepare["train_limit"] or 50_000
    return total - math.ceil(total * prepare["val_fraction"])  # as cifar.data.split


def load_images(args):
    loaded = params.load(["download"])
    sha = args.sha256
    sums = args.archive.with_name("SHA256SUMS")
    if not sha and sums.is_file():
        sha = data.read_sha256_file(sums, args.archive.name)
    if not sha:
        sha, _ = data.trusted_sha256(loaded["download"]["sha256"])
    x, y, *_ = data.read(args.archive, sha)
    args.sha256 = sha
    return x[: args.images], y[: args.images]


def model_rows(rates, ceilings, ceiling_gflops):
    """Each model's row of bench.json from its measured rates: in its own precision and in every
    precision measured, as img/s, GFLOP/s and fractions of the ceilings measured in the same run."""
    per_model = {}
    for name, (by_precision, stream_rate, (model, train, _), inferred) in rates.items():
        gflop = 3 * forward_flops(model) / 1e9  # forward + backward, per training image
        rate = by_precision.get(train["precision"], by_precision["float32"])  # in its own precision
        per_model[name] = {
            "precision": train["precision"],  # its own (params.yaml, resolved for this machine)
            "train_img_per_s": round(rate, 1), "augmentation_img_per_s": round(stream_rate, 1),
            # Above 1, the stream outpaces training here; below 1, it holds the model back.
            "augmentation_vs_training": round(stream_rate / rate, 2),
            "batch_size": train["batch_size"], "epochs": train["epochs"],
            "train_gflop_per_image": round(gflop, 4), "gflops": round(rate * gflop, 1),
            "fraction_of_matmul": round(rate * gflop / ceiling_gflops, 3),
            "precisions": {p: {
                "train_img_per_s": round(r, 1), "vs_float32": round(r / by_precision["float32"], 3),
                "gflops": round(r * gflop, 1),
                "fraction_of_matmul": round(r * gflop / ceilings[p]["matmul"], 3),
                "fraction_of_conv3x3": round(r * gflop / ceilings[p]["conv3x3"], 3),
            } for p, r in by_precision.items()},
            # Inference in float32, as the later stages run it: plain, and with its test-time
            # augmentation's views in one batch (per_view_vs_plain: that rate x its views / plain).
            "inference_img_per_s": {kind: round(r, 1) for kind, r in inferred.items()},
        }
        if "shipped" in inferred:
            views = len(tta.VIEW_WEIGHTS[params.load(["models"])["models"][name]["tta"]])
            per_model[name]["inference_img_per_s"]["per_view_vs_plain"] = round(inferred["shipped"] * views / inferred["plain"], 3)
    return per_model


def time_ratios(report, per_model, baseline, recipe):
    """Each model's predicted training time against the baseline's (the seed CNN's, the registry's
    first): same images per epoch, so (its epochs / its img/s) over (the baseline's), each in its
    own precision; and against the seed's recipe as the seed wrote it (SEED_RECIPE, measured in
    the same rounds: `recipe` is its img/s and (model, train, augment)), with that recipe's time
    on the pipeline's training split (what stage_times.py compares with)."""
    if baseline not in per_model:
        sys.exit(f"bench: error: --baseline {baseline!r} is not a registered model ({', '.join(per_model)})")
    report["baseline"] = baseline
    base = per_model[baseline]["epochs"] / per_model[baseline]["train_img_per_s"]
    rate, (model, train, _) = recipe
    seed_recipe = train["epochs"] / rate
    report["seed_recipe"] = {**SEED_RECIPE, "epochs": train["epochs"], "batch_size": train["batch_size"],
                             "train_img_per_s": round(rate, 1),
                             "train_gflop_per_image": round(3 * forward_flops(model) / 1e9, 4)}
    for m in per_model.values():
        m["predicted_time_vs_baseline"] = round(m["epochs"] / m["train_img_per_s"] / base, 3)
        m["predicted_time_vs_seed_recipe"] = round(m["epochs"] / m["train_img_per_s"] / seed_recipe, 3)
    report["train_images"] = training_images()
    report["seed_recipe_float32_s"] = round(seed_recipe * report["train_images"], 1)


def print_report(report):
    """bench.json's numbers, a line each."""
    per_model, baseline, ceilings, lever_results = (report["models"], report["baseline"], report["ceilings_gflops"],
                                                    report["levers"])
    for name, rate in report["augmentation_img_per_s"].items():
        print(f"{name:>26}: {rate:10.1f} img/s")
    print(f"{'speed-up vs seed':>26}: {report['speedup_vs_seed']:10.2f}x")
    for name, rate in report["cnn_training_img_per_s"].items():
        print(f"{'CNN training, ' + name:>40}: {rate:8.1f} img/s")
    print(f"best float32 matmul: {report['matmul_gflops']}; ceilings per precision: {ceilings}")
    for name, m in per_model.items():
        print(f"{name:>10}: {m['train_img_per_s']:7.1f} img/s x {m['train_gflop_per_image']:.3f} GFLOP = "
              f"{m['gflops']:5.1f} GFLOP/s, {m['fraction_of_matmul']:.0%} of the float32 matmul rate; its augmented "
              f"stream alone {m['augmentation_img_per_s']:.0f} img/s ({m['augmentation_vs_training']:.1f}x training)")
    for name, m in per_model.items():
        print(f"{name:>10}: " + ", ".join(f"{p} {r['train_img_per_s']:.1f} img/s ({r['vs_float32']:.2f}x float32, "
                                          f"{r['fraction_of_conv3x3']:.0%} of its 3x3 conv rate)"
                                          for p, r in m["precisions"].items()))
    for name, m in per_model.items():
        print(f"{name:>10}: inference (float32) " + ", ".join(f"{kind} {r:.0f} img/s" if kind != "per_view_vs_plain" else
                                                            f"per view {r:.2f}x plain"
                                                            for kind, r in m["inference_img_per_s"].items()))
    print(f"predicted training time against {baseline}'s: " + ", ".join(
        f"{name} {m['predicted_time_vs_baseline']:.2f}" for name, m in per_model.items()))
    print(f"predicted training time against the seed recipe's ({report['seed_recipe_float32_s'] / 60:.1f} min in "
          "float32): " + ", ".join(f"{name} {m['predicted_time_vs_seed_recipe']:.2f}" for name, m in per_model.items()))
    for name, found in lever_results.items():
        print(f"{name} levers (img/s against the default {found['default_img_per_s']}): " + ", ".join(
            f"{lever} {m['vs_default']:.2f}x" for lever, m in found.items() if lever != "default_img_per_s"))


def main():
    """The benchmark, in the order it must run (long: its command line is a third of it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, type=Path)
    parser.add_argument("--sha256", help="expected sha256 (default: the SHA256SUMS beside it, else CIFAR10_SHA256 or download.sha256)")
    parser.add_argument("--images", type=int, default=10_000, help="images per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=150, help="timed CNN training steps per feed")
    parser.add_argument("--model-images", type=int, default=8192,
                        help="training images per model per round in the all-models comparison")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the all-models comparison")
    parser.add_argument("--lever-rounds", type=int, default=2,
                        help="alternating rounds of the speed levers against the default (0: skip them)")
    parser.add_argument("--lever-models", help="comma-separated models whose levers to measure (default: all)")
    parser.add_argument("--baseline", help="the model training times are compared with (default: the registry's first)")
    parser.add_argument("--levers", help=f"comma-separated levers to measure (default: all of {', '.join(LEVERS)})")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # one lever's measurement, in a process of its own
    parser.add_argument("--probe-settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe(args)
    cfg = params.load(["shared"])["shared"]
    aug, batch_size, seed = cfg["augment"], cfg["train"]["batch_size"], cfg["seed"]
    x, y = load_images(args)
    sha = args.sha256

    results = {
        "seed_imagedatagenerator": measure(lambda: seed_stream(x, y, batch_size, seed, aug), len(x), args.repeats),
        "tf_data_opencv": measure(lambda: augment.train_dataset(x, y, batch_size, seed, aug), len(x), args.repeats),
        "tf_data_no_augmentation": measure(
            lambda: augment.train_dataset(x, y, batch_size, seed, aug, augment=False), len(x), args.repeats
        ),
    }
    onehot = keras.utils.to_categorical(y, data.NUM_CLASSES)
    training = {  # .repeat(): enough batches for the warm-up and the timed steps
        "tf_data_opencv": training_images_per_second(
            augment.train_dataset(x, onehot, batch_size, seed, aug).repeat(), args.train_steps, batch_size),
        "no_augmentation": training_images_per_second(
            augment.train_dataset(x, onehot, batch_size, seed, aug, augment=False).repeat(),
            args.train_steps, batch_size),
        # The seed's stream yields [0, 1] images; the scale does not change the cost of a step.
        "seed_imagedatagenerator": training_images_per_second(
            seed_stream(x, onehot, batch_size, seed, aug), args.train_steps, batch_size),
    }
    # Every registered model, alternating, in each precision this machine computes natively,
    # against the ceilings (matmul, 3x3 convolution) of that precision measured in the same run.
    matmul = matmul_gflops()
    precisions = bench_precisions()
    ceilings = precision_ceilings(precisions)
    rates, recipe = models_training_rates(x, onehot, seed, args.model_images, args.rounds, precisions)
    per_model = model_rows(rates, ceilings, max(matmul.values()))
    # The speed levers, for every model (or those of --lever-models).
    lever_models = args.lever_models.split(",") if args.lever_models else list(per_model)
    lever_results = levers(args, [n for n in lever_models if n in per_model], args.lever_rounds,
                           args.levers.split(",") if args.levers else None) if args.lever_rounds else {}
    report = {
        "matmul_gflops": {k: round(v, 1) for k, v in matmul.items()},
        "ceilings_gflops": ceilings,  # per precision: TensorFlow's matmul and 3x3 convolution
        "models": per_model,
        "levers": lever_results,
        "augmentation_img_per_s": {k: round(v, 1) for k, v in results.items()},
        "cnn_training_img_per_s": {k: round(v, 1) for k, v in training.items()},
        "augmentation_cost_of_training_throughput": round(1 - training["tf_data_opencv"] / training["no_augmentation"], 3),
        "speedup_vs_seed": round(results["tf_data_opencv"] / results["seed_imagedatagenerator"], 2),
        "images_per_pass": len(x),
        "batch_size": batch_size,
        "data": {"archive": args.archive.name, "sha256": sha},
        "environment": outputs.hardware(),
    }
    time_ratios(report, per_model, args.baseline or next(iter(per_model)), recipe)
    outputs.write_json(args.out, report)
    print_report(report)

if __name__ == "__main__":
    main()
