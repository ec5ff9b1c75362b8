"""The driver every training stage shares: the command line (paths from dvc.yaml), the identity
that stamps the resume state (params, code, weights), the DVCLive log, the outputs and errors."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

from cifar import data, models, outputs, params, training


REPO = Path(__file__).resolve().parents[2]


def resolved(stage, root=REPO):
    """The dvc.yaml stage (`train@NAME`) as DVC resolves it: its cmd and deps."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            found = repo.stage.collect(stage)[0]
            return {"cmd": found.cmd, "deps": [dep.def_path for dep in found.deps]}
    except (DvcException, IndexError) as err:
        raise outputs.StageError(f"{root / 'dvc.yaml'} has no stage '{stage}' that DVC can resolve "
                                 f"({type(err).__name__}: {err})") from None


def declared_code(stage, root=REPO):
    """The code files (under scripts/) the stage declares as deps, relative to `root`."""
    files = set()
    for dep in resolved(stage, root).get("deps", []):
        if not dep.startswith("scripts/"):
            continue
        path = root / dep
        if path.is_dir():
            files |= {p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        elif path.is_file():
            files.add(path)
        else:
            raise outputs.StageError(f"{root / 'dvc.yaml'}: stage '{stage}' declares {dep}, which does not exist")
    return sorted(p.relative_to(root).as_posix() for p in files)


def code_digest(stage, root=REPO):
    """sha256 of the stage's declared code: what DVC reruns it for is what a resume is refused for."""
    h = hashlib.sha256()
    for rel in declared_code(stage, root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def train(description):
    """A training stage's body: the model `--name` trained by its plan from `--weights`' file."""
    parser = arguments(description)
    args = parser.parse_args()
    entry, section = models.entry(args.name)
    seed = params.load(["shared"])["shared"]["seed"]
    weights, provenance = None, {}
    if args.weights:
        weights, source = weights_argument(args.weights)
        if source["file"]:
            provenance["weights"] = source
    plan = models.plan(entry, section, weights)
    cfg = {"shared": {"seed": seed}, args.name: section, "registry": dict(entry)}
    run(args.name, plan, args, cfg, provenance)


def weights_argument(folder):
    """(the builder's `weights` for fetch_weights' folder, its source.json)."""
    source = outputs.read_json(folder / "source.json", "fetch_weights", needs=["file", "sha256"])
    return (str(folder / source["file"]) if source["file"] else None), source


def run(name, plan, args, cfg, provenance):
    """Fit the `plan`'s phases (each built from the phase before's best model) and write the model,
    DVCLive log and metrics; then the resume state goes.

    `cfg`: every params section the stage read; `provenance`: inputs the metrics name (the weights'
    sha256), part of the identity. The state is deleted only once the outputs are written, so a kill
    before leaves a state the rerun reuses. A NaN loss fails the stage, naming the epoch, unless
    `args.keep_checkpoint_on_nan`."""
    # First: the multi-worker strategy must be made before any other TensorFlow work.
    strategy = training.make_strategy(plan.phases[0].train["distribute"])
    chief, task = training.worker_role(strategy)
    where, _, warning = training.device_report(strategy)
    precision, feature, _ = training.precision.resolve(plan.phases[0].train["precision"])
    print(f"{name}: training on {where}, {precision}" + (f" ({feature})" if precision != "float32" else "")
          + (f" ({task})" if task else ""), flush=True)
    if warning:
        print(f"{name}: warning: {warning}", flush=True)
    arrays = data.load_prepared(args.data)
    identity = {"params": cfg, "code": code_digest(models.train_stage(name)), "inputs": provenance}
    state = args.state / name  # the chief's; the other workers keep theirs in a temporary folder
    rows, summaries, previous = [], [], None
    for phase in plan.phases:
        best_path, phase_rows, summary = training.fit(
            lambda: phase.build(arrays, previous), arrays, phase.train, plan.augment, cfg["shared"]["seed"],
            state if phase.name is None else state / phase.name, strategy=strategy, recipe=plan.recipe,
            live=args.live if chief else None, first_step=len(rows),
            identity=identity if phase.name is None else {**identity, "phase": phase.name},
        )
        check_finite(name, phase.name, summary, len(rows), args.keep_checkpoint_on_nan)
        rows += [{**row, "epoch": len(rows) + i} for i, row in enumerate(phase_rows)]
        summaries.append((phase.name, summary))
        previous = best_path
    summary = summaries[0][1] if len(plan.phases) == 1 else training.combine_phases(summaries)
    if not chief:
        print(f"{name}: {task} finished its share of training; the chief writes the model and the metrics")
        return
    with outputs.atomic_path(args.model) as tmp:
        shutil.copyfile(previous, tmp)
    outputs.write_json(args.metrics, {
        name: {**summary, "recipe": plan.variant, "device": where, **({"gpu_unused": warning} if warning else {})},
        "data": {"archive_sha256": str(arrays["archive_sha256"])},
        **provenance,
        "environment": outputs.hardware(),
        "stage_s": outputs.stage_seconds(),  # the fit's own time is wall_time_s
    })
    shutil.rmtree(state, ignore_errors=True)  # last: until the outputs are in place, a rerun reuses it
    print(
        f"{name}: best val accuracy {summary['best_val_accuracy']:.2%} at epoch {summary['best_epoch']}, "
        f"{summary['epochs_run']} epochs in {summary['wall_time_s']:.0f} s, "
        f"{summary['train_img_per_s']} training img/s"
    )
    warning = at_chance(name, summary["best_val_accuracy"], len(arrays["class_names"]), precision)
    if warning:
        print(warning)


def at_chance(name, best_val, classes, precision):
    """A warning line when the best val accuracy is under 1.5 / classes: the model did not learn."""
    if best_val >= 1.5 / classes:
        return None
    advice = ([f"it trained in {precision}: try float32 (-S MODULE.train.precision=float32 or "
               "shared.train.precision; in bfloat16 the fast models do not learn grey images such as "
               "scikit-learn's digits)"] if precision != "float32" else [])
    advice.append("check the images and labels (reports/figures/augment_preview.png) and the number of training steps")
    text = "; ".join(advice)
    return (f"{name}: warning: best val accuracy {best_val:.2%} is at chance ({1 / classes:.2%} for {classes} classes): "
            f"the model did not learn. {text[0].upper()}{text[1:]}")


def check_finite(name, phase, summary, epochs_before, keep_checkpoint):
    """Fail in one line on a NaN loss in this phase, unless the best model before it is asked for."""
    epoch = summary.get("nan_epoch")
    if epoch is None:
        return
    where = f" (phase '{phase}')" if phase else ""
    if not keep_checkpoint:
        raise training.TrainingError(
            f"{name}: the loss became NaN in epoch {epochs_before + epoch}{where}, and training stopped; lower the "
            "learning rate, or, to publish the best model of the epochs before it, rerun the stage's command "
            "(dvc.yaml) with --keep-checkpoint-on-nan")
    print(f"{name}: the loss became NaN in epoch {epochs_before + epoch}{where}; keeping the best model of the "
          "epochs before it (--keep-checkpoint-on-nan)")


def arguments(description):
    """The command line every training stage takes (paths come from dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", required=True, help="the model's name in the registry (params.yaml `models`)")
    parser.add_argument("--data", required=True, type=Path, help="prepared arrays (.npz) from `prepare`")
    parser.add_argument("--model", required=True, type=Path, help="where the best model (.keras) goes")
    parser.add_argument("--metrics", required=True, type=Path, help="training metrics JSON")
    parser.add_argument("--live", type=Path, help="DVCLive folder: every epoch's metrics, as training goes")
    parser.add_argument("--weights", type=Path, help="the model's folder from `fetch_weights` (its source.json names a "
                                                     "weights file to start from, or none)")
    parser.add_argument("--state", required=True, type=Path,
                        help="folder for the resume state (kept only while training is unfinished)")
    parser.add_argument("--keep-checkpoint-on-nan", action="store_true",
                        help="if the loss becomes NaN, publish the best model of the epochs before it "
                             "instead of failing")
    return parser


def main(stage, body):
    outputs.run_stage(stage, body)
