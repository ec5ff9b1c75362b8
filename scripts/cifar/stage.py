"""The driver both training stages share: load the prepared data, fit, write the declared outputs.

The fit itself is `cifar.training`; this module adds what a DVC stage needs around it: the
command line (paths come from dvc.yaml), the identity that stamps the resume state (every
param the stage read, its code, the pretrained weights), atomic outputs and clear errors.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from cifar import data, outputs, training


def code_digest():
    """sha256 of the running script and every `cifar` module it has imported: the model's code."""
    files = {Path(sys.argv[0]).resolve()}
    files |= {Path(m.__file__).resolve() for name, m in list(sys.modules.items())
              if (name == "cifar" or name.startswith("cifar.")) and getattr(m, "__file__", None)}
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run(name, build_model, args, cfg, provenance, train=None, augment=None, phases=None):
    """Fit `build_model(arrays)` and write the model, history and metrics `args` names.

    `cfg`: every params section the stage read (validated), `shared` among them; `provenance`:
    the inputs the metrics should name (the weights' sha256, say), also part of the identity.
    `train` / `augment`: a model's own recipe and augmentation, instead of shared.train /
    shared.augment (the seed's).

    `phases`: a recipe in steps, e.g. a new head on a frozen backbone, then the backbone's top:
    [(phase name, build(arrays, previous), its train settings)], fitted one after another, each
    built from the best model of the phase before (`previous`, a .keras path; None for the first,
    and on workers other than the chief, which then receive the chief's weights). Each phase
    resumes on its own; the history runs on across phases and the last phase's best model is the
    stage's model. Default: one phase, `build_model` with `train`.
    """
    shared = cfg["shared"]
    augment = augment or shared["augment"]
    phases = phases or [(None, lambda arrays, previous: build_model(arrays), train or shared["train"])]
    # First: the multi-worker strategy must be made before any other TensorFlow work.
    strategy = training.make_strategy(phases[0][2].get("distribute", "default"))
    chief, task = training.worker_role(strategy)
    if chief:
        for path in (args.model, args.history, args.metrics):
            outputs.check_output(path)
    arrays = data.load_prepared(args.data)
    identity = {"params": cfg, "code": code_digest(), "inputs": provenance}
    state = args.state / name  # the chief's; the other workers keep theirs in a temporary folder
    rows, summaries, previous = [], [], None
    for phase, build, phase_train in phases:
        best_path, phase_rows, summary = training.fit(
            lambda: build(arrays, previous), arrays, phase_train, augment, shared["seed"],
            state if phase is None else state / phase, strategy=strategy,
            identity=identity if phase is None else {**identity, "phase": phase},
        )
        rows += [{**row, "epoch": len(rows) + i} for i, row in enumerate(phase_rows)]
        summaries.append((phase, summary))
        previous = best_path
    summary = summaries[0][1] if len(phases) == 1 else training.combine_phases(summaries)
    if not chief:
        print(f"{name}: {task} finished its share of training; the chief writes the model and the metrics")
        return
    training.write_history(rows, args.history)
    with outputs.atomic_path(args.model) as tmp:
        shutil.copyfile(previous, tmp)
    outputs.write_json(args.metrics, {
        name: summary,
        "data": {"archive_sha256": str(arrays["archive_sha256"])},
        **provenance,
        "environment": outputs.hardware(),
    })
    shutil.rmtree(state, ignore_errors=True)
    print(
        f"{name}: best val accuracy {summary['best_val_accuracy']:.2%} at epoch {summary['best_epoch']}, "
        f"{summary['epochs_run']} epochs in {summary['wall_time_s']:.0f} s, "
        f"{summary['train_img_per_s']} training img/s"
    )


def arguments(description):
    """The command line both training stages take (paths come from dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, type=Path, help="prepared arrays (.npz) from `prepare`")
    parser.add_argument("--model", required=True, type=Path, help="where the best model (.keras) goes")
    parser.add_argument("--history", required=True, type=Path, help="per-epoch history CSV")
    parser.add_argument("--metrics", required=True, type=Path, help="training metrics JSON")
    parser.add_argument("--state", required=True, type=Path,
                        help="folder for the resume state (kept only while training is unfinished)")
    return parser


def main(stage, body):
    """Run a stage's `body()`; expected failures become one `stage: error: ...` line, exit 1."""
    try:
        body()
    except (outputs.StageError, FileNotFoundError) as err:
        sys.exit(f"{stage}: error: {err}")
