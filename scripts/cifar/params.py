"""Read and validate `params.yaml`.

Every key the pipeline knows is listed once in SCHEMA with what it allows. A stage calls
`load(sections)` at start; a missing, unknown or out-of-range key stops it with a message that
names the key, the bad value and what is allowed, before anything is written.

The file is parsed the way DVC parses it (ruamel.yaml, YAML 1.2), so a value means the same to
a stage as to `dvc params diff` and `dvc exp run -S`: `1e-3` is a number to both (PyYAML, a
YAML 1.1 parser, would read it as the string "1e-3").
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from cifar.outputs import StageError


class ParamsError(StageError, ValueError):
    """A value in params.yaml is missing, unknown or outside what is allowed."""


def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """Validator for an int or float within [lo, hi] (bounds open where asked)."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    span = f"in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    allowed = f"{'an integer' if kind is int else 'a number'} {span}"

    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return allowed
        if kind is int and not isinstance(value, int):
            return allowed
        if isinstance(value, float) and not math.isfinite(value):
            return allowed
        if lo is not None and (value < lo or (lo_open and value == lo)):
            return allowed
        if hi is not None and (value > hi or (hi_open and value == hi)):
            return allowed
        return None

    check.span = span
    return check


def _boolean(value):
    return None if isinstance(value, bool) else "true or false"


def _choice(*options):
    def check(value):
        return None if value in options else "one of " + ", ".join(map(str, options))

    return check


def _sha256(value):
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return None
    return "a sha256 hex digest (64 lowercase hex characters)"


def _url(value):
    if isinstance(value, str) and re.match(r"^(https?|ftp)://\S+$", value):
        return None
    return "an http(s) or ftp URL"


def _int_list(length, lo, hi=None):
    item = _number(int, lo, hi)

    def check(value):
        ok = isinstance(value, list) and len(value) == length and not any(map(item, value))
        return None if ok else f"a list of {length} integers, each {item.span}"

    return check


def _float_list(length, lo, hi, hi_open=False):
    item = _number(float, lo, hi, hi_open=hi_open)

    def check(value):
        ok = isinstance(value, list) and len(value) == length and not any(map(item, value))
        return None if ok else f"a list of {length} numbers, each {item.span}"

    return check


def _scale_range(value):
    # Below a quarter (8 px of 32) the image is gone; a factor near 0 would resize to 0 px.
    allowed = "a list [low, high] with 0.25 <= low <= high <= 2"
    if not (isinstance(value, list) and len(value) == 2):
        return allowed
    if any(_number(float, 0.25, 2)(v) for v in value) or value[0] > value[1]:
        return allowed
    return None


def _weights(value):
    if value in ("imagenet", "none"):
        return None
    if isinstance(value, str) and value.endswith(".h5"):
        return None
    return "'imagenet', 'none', or the path of a Keras weights file ending in .h5"


def _model_list(value):
    allowed = "a non-empty list of distinct model names from: cnn, mobilenet"
    if not (isinstance(value, list) and value and len(set(value)) == len(value)):
        return allowed
    return None if all(v in ("cnn", "mobilenet") for v in value) else allowed


SCHEMA = {
    "shared": {
        "seed": _number(int, 0, 2**31 - 1),
        "augment": {
            "resolution_scale": _scale_range,
            "rotation_degrees": _number(float, 0, 180),
            "shift_fraction": _number(float, 0, 0.5),
            "horizontal_flip": _boolean,
        },
        "train": {
            "epochs": _number(int, 1, 10_000),
            "batch_size": _number(int, 1, 65_536),
            "learning_rate": _number(float, 0, 10, lo_open=True),
            "lr_decay": _number(float, 0, 1, lo_open=True),
            "early_stopping_patience": _number(int, 0),
            "plateau_factor": _number(float, 0, 1, lo_open=True, hi_open=True),
            "plateau_patience": _number(int, 0),
            "augment": _boolean,
            "distribute": _choice("default", "mirrored"),
        },
    },
    "download": {
        "url": _url,
        "sha256": _sha256,
    },
    "prepare": {
        "val_fraction": _number(float, 0, 1, lo_open=True, hi_open=True),
        "train_limit": _number(int, 0),
        "test_limit": _number(int, 0),
    },
    "augment_preview": {
        "images": _number(int, 1, 32),
        "variants": _number(int, 1, 16),
    },
    "train_cnn": {
        "filters": _int_list(3, 1, 4096),
        "kernel_size": _number(int, 1, 15),
        "block_dropout": _float_list(2, 0, 1, hi_open=True),
        "dense_units": _number(int, 1, 65_536),
        "dense_dropout": _number(float, 0, 1, hi_open=True),
    },
    "finetune_mobilenet": {
        "weights": _weights,
        "input_size": _number(int, 32, 224),
        "trainable_layers": _number(int, 0),
        "dropout": _number(float, 0, 1, hi_open=True),
    },
    "evaluate": {
        "batch_size": _number(int, 1, 65_536),
        "misclassified_images": _number(int, 0, 120),
    },
    "export": {
        "models": _model_list,
        "int8_calibration_images": _number(int, 1, 50_000),
        "tfjs_quantization": _choice("none", "float16", "uint8"),
    },
    "parity": {
        "batch_size": _number(int, 1, 65_536),
        "latency_runs": _number(int, 0, 10_000),
    },
}


def _validate(values, schema, where, path):
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: '{where}' must be a mapping of keys, got {values!r}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ParamsError(
            f"{path}: unknown key '{key}'; allowed keys here: {', '.join(sorted(schema))}"
        )
    for key, rule in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in values:
            raise ParamsError(f"{path}: missing key '{name}'")
        if isinstance(rule, dict):
            _validate(values[key], rule, name, path)
            continue
        allowed = rule(values[key])
        if allowed:
            raise ParamsError(f"{path}: {name} = {values[key]!r} is not allowed; expected {allowed}")


def load(sections, path="params.yaml"):
    """Return {section: values} for the sections a stage reads, after validating them.

    Top-level keys are checked against SCHEMA too, so a misspelt section fails every stage.
    """
    path = Path(path)
    try:
        params = YAML(typ="safe").load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run the stage from the repository root") from None
    except YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: must be a mapping of sections, got {params!r}")
    unknown = sorted(set(params) - set(SCHEMA))
    if unknown:
        raise ParamsError(
            f"{path}: unknown section '{unknown[0]}'; allowed sections: {', '.join(SCHEMA)}"
        )
    for section in sections:
        if section not in params:
            raise ParamsError(f"{path}: missing section '{section}'")
        _validate(params[section], SCHEMA[section], section, path)
    return {section: params[section] for section in sections}
