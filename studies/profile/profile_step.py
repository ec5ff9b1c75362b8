"""Where a training step's time goes: TensorFlow's profiler over a few steps, by kind of op.

Usage: python studies/profile/profile_step.py [--model fast] [--precisions float32,mixed_bfloat16]
           [--steps 8] [--out studies/profile/fast.json]   (make profile)

For each precision, the registry's model is built and compiled as its stage trains it (bench's
`registry_models`: its recipe, batch size and augmented stream), warmed up, then profiled over
`--steps` steps with `tf.profiler.experimental`. The trace (an XPlane protobuf) is read back and
every TensorFlow op event on the host is put in one kind:

    convolution      Conv2D and its gradients, matmuls, bias adds (oneDNN's fused forms too)
    batchnorm        FusedBatchNorm and its gradient
    elementwise      activations (GELU's tanh, mul, add, pow, ...) and their gradients
    pooling          max/average pooling and their gradients
    cast             Cast (mixed precision's copies between float32 and bfloat16)
    optimizer        the variable updates (ResourceApply*, Assign*Variable*, ReadVariableOp)
    reduction        sums and means (the loss, the metrics, BatchNorm's statistics)
    input            IteratorGetNext: the step waiting for its batch
    other            everything else

The shares are of the summed op time (ops run on several threads at once, so the sum can exceed
the step's wall time, which is given beside it). Writes one JSON file with both precisions side
by side and the host it ran on.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # scripts/, for the cifar package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # studies/bench/, for bench

KINDS = {  # first match wins; matched against the op's type
    "input": r"^IteratorGetNext",
    "cast": r"^Cast$",
    "batchnorm": r"BatchNorm",
    "convolution": r"Conv2D|Conv3D|MatMul|Einsum|BiasAdd|Depthwise|_Fused",
    "pooling": r"Pool",
    "optimizer": r"^ResourceApply|^Assign\w*Variable|^ReadVariableOp$|^ResourceScatter",
    "reduction": r"^(Sum|Mean|Max|Min|Prod|ArgMax|All|Any)$",
    "elementwise": r"^(Tanh|TanhGrad|Relu|Relu6|ReluGrad|Relu6Grad|Elu|Gelu|Sigmoid|SigmoidGrad|Softmax|LogSoftmax|"
                   r"Mul|AddV2|Add|AddN|Sub|RealDiv|Div|DivNoNan|Pow|Square|Sqrt|Rsqrt|RsqrtGrad|Exp|Log|Neg|"
                   r"Maximum|Minimum|SquaredDifference|Select|SelectV2|Erf|Tile|BroadcastTo|Reciprocal|"
                   r"SoftmaxCrossEntropyWithLogits|_MklSwish|LeakyRelu)$",
}


def kind_of(op_type):
    """The kind (KINDS) of a TensorFlow op type, e.g. 'Conv2DBackpropFilter' -> 'convolution'."""
    for kind, pattern in KINDS.items():
        if re.search(pattern, op_type):
            return kind
    return "other"


CONTAINERS = ("Run", "Process", "Execute")  # the executor's own events, around the ops they run


def op_type(name):
    """An op event's type, from the name TensorFlow gives host op events ('scope/name:Type'), or
    None for the profiler's other events (the executor's 'ExecutorState::Process', function
    calls, ...), which hold ops and would count them twice."""
    if ":" not in name or "::" in name:
        return None
    kind = name.rsplit(":", 1)[1]
    if not re.fullmatch(r"_?[A-Z][A-Za-z0-9_]*", kind) or kind in CONTAINERS or kind.startswith("__"):
        return None
    return kind


def op_times(xplane_path):
    """{op type: total microseconds} of the TensorFlow op events on the host plane of a trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(xplane_path).read_bytes())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                meta = plane.event_metadata.get(event.metadata_id)
                kind = op_type(meta.name) if meta is not None else None
                if kind:
                    totals[kind] += event.duration_ps / 1e6
    return totals


def profile(name, precision, steps, x, onehot, seed):
    """(op seconds by type, wall seconds per step) of `steps` profiled training steps."""
    import bench
    import tensorflow as tf

    from cifar import augment

    model, train, aug = bench.registry_models(x, only=name, precision=precision)[name]
    stream = augment.train_dataset(x, onehot, train["batch_size"], seed, aug, epochs=10_000)
    model.fit(stream, epochs=1, steps_per_epoch=3, verbose=0)  # tracing, thread pools
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        traces = sorted(Path(logdir).rglob("*.xplane.pb"))
        if not traces:
            sys.exit(f"profile_step: the profiler wrote no trace under {logdir}")
        totals = op_times(traces[-1])
    return totals, wall / steps, train["batch_size"]


def summarise(totals, steps):
    """Per kind: ms per step and share of the summed op time; the top op types beside."""
    by_kind = collections.Counter()
    for op, us in totals.items():
        by_kind[kind_of(op)] += us
    total = sum(by_kind.values()) or 1.0
    return {
        "kinds": {k: {"ms_per_step": round(us / 1e3 / steps, 2), "share": round(us / total, 3)}
                  for k, us in by_kind.most_common()},
        "top_ops": {op: round(us / 1e3 / steps, 2) for op, us in totals.most_common(15)},
        "op_ms_per_step": round(total / 1e3 / steps, 1),
    }


def main():
    import keras

    from cifar import data, outputs, params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast", help="a registry name")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=8, help="profiled training steps per precision")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/cifar10.npz"))
    parser.add_argument("--images", type=int, default=8192, help="training images the stream draws from")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(f"studies/profile/{args.model}.json")
    arrays = data.load_prepared(args.data)
    x = arrays["x_train"][: args.images]
    onehot = keras.utils.to_categorical(arrays["y_train"][: args.images], len(arrays["class_names"]))
    seed = params.load(["shared"])["shared"]["seed"]
    result = {"model": args.model, "steps": args.steps, "precisions": {}, "environment": outputs.hardware()}
    for precision in args.precisions.split(","):
        totals, step_s, batch = profile(args.model, precision, args.steps, x, onehot, seed)
        row = {"batch_size": batch, "wall_ms_per_step": round(step_s * 1e3, 1),
               "img_per_s": round(batch / step_s, 1), **summarise(totals, args.steps)}
        result["precisions"][precision] = row
        print(f"{args.model}, {precision}: {row['wall_ms_per_step']} ms a step ({row['img_per_s']} img/s); " + ", ".join(
            f"{k} {v['share']:.0%}" for k, v in row["kinds"].items()), flush=True)
    outputs.write_json(out, result)
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
