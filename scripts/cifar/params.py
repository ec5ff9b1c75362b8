"""Read and validate `params.yaml`.

Every key the pipeline knows is listed once with what it allows: here in SCHEMA for the
sections several stages read, with its stage for a later stage's section (STAGE_SECTIONS), and
in its model module for a model's section (cifar.models, so editing one model's rules retrains
that model only). A stage calls
`load(sections)` at start; a missing, unknown or out-of-range key stops it with a message that
names the key, the bad value and what is allowed, before anything is written.

The rule: a value that passes validation never crashes a stage. A rule here allows only what
every stage reading the key can run; where what is possible depends on the data (a train_limit
too small to split, a batch larger than the training set), the stage checks it against the data
and stops with a StageError that names the key, never with a traceback from deeper down.

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


def _auto_or_boolean(value):
    return None if value == "auto" or isinstance(value, bool) else "auto, true or false"


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


REGISTRY_KEYS = ("module", "recipe", "label", "tta")
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Only the project's own model modules, by name: the registry names code to import, and
# params.yaml (or a `-S` on the command line) must not be a way to import any module. dvc.yaml's
# train, export and parity stages declare its file, scripts/cifar/models/MODULE.py, as a dependency.
MODULE = NAME


def _registry(value, path):
    """Check the `models` section: {name: {module, recipe, label, tta}}; raise ParamsError."""
    if not isinstance(value, dict) or not value:
        raise ParamsError(f"{path}: 'models' must map each model's name to its entry, got {value!r}")
    for name, entry in value.items():
        if not (isinstance(name, str) and NAME.fullmatch(name)):
            raise ParamsError(f"{path}: models.{name} is not a valid model name; expected lowercase letters, "
                              "digits and _ (it names files: models/trained/NAME.keras)")
        if not isinstance(entry, dict) or set(entry) != set(REGISTRY_KEYS):
            got = sorted(entry) if isinstance(entry, dict) else entry
            raise ParamsError(f"{path}: models.{name} must have exactly the keys {', '.join(REGISTRY_KEYS)}; got {got}")
        if not (isinstance(entry["module"], str) and MODULE.fullmatch(entry["module"])):
            raise ParamsError(f"{path}: models.{name}.module = {entry['module']!r} is not allowed; expected the name "
                              "of a model module of the project's package, scripts/cifar/models/NAME.py (e.g. fast)")
        if entry["recipe"] not in ("shared", entry["module"]):
            raise ParamsError(f"{path}: models.{name}.recipe = {entry['recipe']!r} is not allowed; expected shared (it "
                              f"trains with the seed's settings, shared.train and shared.augment) or {entry['module']!r} "
                              "(a recipe of its own, in its module's section)")
        if not (isinstance(entry["label"], str) and entry["label"].strip()):
            raise ParamsError(f"{path}: models.{name}.label = {entry['label']!r} is not allowed; expected a non-empty string")
        if entry["tta"] not in (0, 1, 2) or isinstance(entry["tta"], bool):
            raise ParamsError(f"{path}: models.{name}.tta = {entry['tta']!r} is not allowed; expected one of 0, 1, 2 "
                              "(test-time augmentation: none, flip, flip + 1 px shifts)")


def model_sections(registry):
    """The params sections the registry names: each module's settings, and each model's own
    (its overrides of its module's; the same section where the model is named as its module)."""
    return {*(entry["module"] for entry in registry.values()), *registry}


def merged(base, overrides):
    """`base` with `overrides` laid over it key by key, nested mappings merged the same way."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


# Sections of the stages downstream of training. Their schemas live with their stages
# (e.g. scripts/evaluate.py's SCHEMA, passed to load()), so that changing one touches only that
# stage: every training stage depends on this file. They are named here so that a misspelt
# section still fails every stage.
STAGE_SECTIONS = ("fetch_weights", "augment_preview", "evaluate", "robustness", "export", "parity")

SCHEMA = {
    "models": _registry,  # the model registry, checked as a whole
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
            "distribute": _choice("default", "mirrored", "multi_worker"),
            "steps_per_execution": _number(int, 1, 10_000),
            "jit_compile": _auto_or_boolean,
            "precision": _choice("float32", "mixed_bfloat16", "mixed_float16"),
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
}


# The rules, for the stages and model modules that keep their own section's schema.
number, boolean, choice, auto_or_boolean = _number, _boolean, _choice, _auto_or_boolean
int_list, float_list, weights_file = _int_list, _float_list, _weights


def names_from(allowed):
    """Rule: a non-empty list of distinct names, each one of `allowed`."""
    def check(value):
        ok = isinstance(value, list) and value and len(set(value)) == len(value) and set(value) <= set(allowed)
        return None if ok else f"a non-empty list of distinct names from: {', '.join(allowed)}"

    return check


def validate(values, schema, where, path="params.yaml"):
    """Check `values` (the params section `where`) against `schema`; raise ParamsError naming
    the key, the value and what is allowed. For a model whose module keeps its own schema."""
    _validate(values, schema, where, Path(path))


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


def load(sections, path="params.yaml", schemas=None):
    """Return {section: values} for the sections a stage reads, after validating them.

    `schemas`: {section: schema} for sections whose schema lives with their stage
    (STAGE_SECTIONS). Top-level keys are checked too, so a misspelt section fails every stage.
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
    if "models" not in params:
        raise ParamsError(f"{path}: missing section 'models' (the model registry)")
    _registry(params["models"], path)
    for name, entry in params["models"].items():
        for section in (entry["module"], name):
            if section not in params:
                raise ParamsError(f"{path}: models.{name} needs the section '{section}' ("
                                  + ("its module's settings" if section == entry["module"] else
                                     "its overrides of its module's settings; {} for none") + "), which is missing")
    # A registered model's params section may be one SCHEMA does not know (a new model's):
    # then it must be a mapping, and its builder reads what it needs from it.
    registered = model_sections(params["models"])
    unknown = sorted(set(params) - set(SCHEMA) - set(STAGE_SECTIONS) - registered)
    if unknown:
        raise ParamsError(
            f"{path}: unknown section '{unknown[0]}'; allowed sections: {', '.join([*SCHEMA, *STAGE_SECTIONS])}, "
            "and the sections the models registry names (its modules and models)"
        )
    for section in sections:
        if section not in params:
            raise ParamsError(f"{path}: missing section '{section}'")
        rule = (schemas or {}).get(section, SCHEMA.get(section))
        if isinstance(rule, dict):
            _validate(params[section], rule, section, path)
        elif rule is None and not isinstance(params[section], dict):
            raise ParamsError(f"{path}: '{section}' must be a mapping of keys, got {params[section]!r}")
    return {section: params[section] for section in sections}
