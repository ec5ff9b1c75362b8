"""Read and validate `params.yaml` with pydantic.

Every section is a `Section` (unknown keys refused, nothing coerced), defined once: here for the
shared ones (SCHEMA), in its stage's script for a later stage's (STAGE_SECTIONS), in its model
module for a model's. `load(sections)` stops a stage on a missing, unknown or out-of-range key
with the key, the value and what is allowed (`Allowed`), before anything is written. A value that
passes never crashes a stage; what depends on the data is checked against it with a StageError.
The file is parsed as DVC parses it (ruamel.yaml, YAML 1.2): `1e-3` is a number to both."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from ruamel.yaml import YAML, YAMLError

from cifar.outputs import StageError


class ParamsError(StageError, ValueError):
    """A value in params.yaml is missing, unknown or outside what is allowed."""


class Section(BaseModel):
    """A params section: exactly its declared keys, each of its declared type, nothing coerced."""
    model_config = ConfigDict(extra="forbid", strict=True)


class Allowed(str):
    """What a value must be, as an error message says it ("an integer in [1, 10000]")."""


def allowed_of(annotation):
    """The `Allowed` text an annotation carries; a nested section is "a mapping of keys"."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, Allowed):
            return str(meta)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of keys: " + ", ".join(annotation.model_fields)
    return str(annotation)


def number(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """An int or float in [lo, hi] (open where asked), finite."""
    span = (f"in {'(' if lo_open else '['}{'-inf' if lo is None else lo}, "
            f"{'inf' if hi is None else hi}{')' if hi_open else ']'}")
    bounds = {("gt" if lo_open else "ge"): lo, ("lt" if hi_open else "le"): hi}
    field = Field(**{k: v for k, v in bounds.items() if v is not None}, **({} if kind is int else {"allow_inf_nan": False}))
    return Annotated[kind, field, Allowed(f"{'an integer' if kind is int else 'a number'} {span}")]


def choice(*options):
    return Annotated[Literal[options], Allowed("one of " + ", ".join(map(str, options)))]


def rule(check, allowed, kind=Any):
    """A value of `kind` that `check` accepts; `allowed` says what it may be."""
    def validator(value):
        if not check(value):
            raise ValueError(allowed)
        return value

    return Annotated[kind, AfterValidator(validator), Allowed(allowed)]


def listed(item, length, noun):
    """A list of exactly `length` items of the type `item`."""
    return Annotated[list[item], Field(min_length=length, max_length=length),
                     Allowed(f"a list of {length} {noun}, each {allowed_of(item).split(' ', 2)[-1]}")]


def int_list(length, lo, hi=None):
    return listed(number(int, lo, hi), length, "integers")


def float_list(length, lo, hi, hi_open=False):
    return listed(number(float, lo, hi, hi_open=hi_open), length, "numbers")


def or_null(kind):
    """`kind`, or null: a key the chosen recipe does not use."""
    return Annotated[Optional[kind], Allowed(f"{allowed_of(kind)}, or null")]


def names_from(allowed):
    """A non-empty list of distinct names, each one of `allowed`."""
    return rule(lambda v: isinstance(v, list) and v and len(set(v)) == len(v) and set(v) <= set(allowed),
                f"a non-empty list of distinct names from: {', '.join(allowed)}")


boolean = Annotated[bool, Allowed("true or false")]
auto_or_boolean = Annotated[Literal["auto"] | bool, Allowed("auto, true or false")]
precision = choice("float32", "mixed_bfloat16", "mixed_float16")
distribute = choice("default", "mirrored", "multi_worker")
class_weight = choice("none", "balanced")  # Keras' class_weight: balanced weighs each class as much
weights_file = rule(lambda v: v in ("imagenet", "none") or (isinstance(v, str) and v.endswith(".h5")),
                    "'imagenet', 'none', or the path of a Keras weights file ending in .h5")
# Below a quarter (8 px of 32) the image is gone; a factor near 0 would resize to 0 px.
scale_range = rule(lambda v: isinstance(v, list) and len(v) == 2 and all(
    isinstance(x, (int, float)) and not isinstance(x, bool) and 0.25 <= x <= 2 for x in v) and v[0] <= v[1],
    "a list [low, high] with 0.25 <= low <= high <= 2")


class AugMix(Section):  # `augment.augmix`: AugMix's settings (cifar.augmix)
    severity: number(int, 1, 10)
    width: number(int, 1, 10)
    depth: number(int, 0, 10)  # 0: 1 to 3 operations per chain
    alpha: number(float, 0, 100, lo_open=True)


# The keys each augmentation policy reads; the other policies' keys stay, unread.
POLICY_KEYS = {"seed": ("resolution_scale", "rotation_degrees", "shift_fraction", "horizontal_flip"),
               "flip_translate": ("translate_px",), "augmix": ("translate_px", "augmix")}


class Augment(Section):  # every model's `augment`: shared.augment with its section's laid over
    policy: choice(*POLICY_KEYS)
    resolution_scale: or_null(scale_range)
    rotation_degrees: or_null(number(float, 0, 180))
    shift_fraction: or_null(number(float, 0, 0.5))
    horizontal_flip: or_null(boolean)
    translate_px: or_null(number(int, 0, 8))
    augmix: or_null(AugMix)


class Train(Section):  # every model's `train`: shared.train (the seed's) with its section's laid over
    epochs: number(int, 1, 10_000)
    batch_size: number(int, 1, 65_536)
    learning_rate: number(float, 0, 10, lo_open=True)
    lr_decay: number(float, 0, 1, lo_open=True)
    early_stopping_patience: number(int, 0)
    plateau_factor: number(float, 0, 1, lo_open=True, hi_open=True)
    plateau_patience: number(int, 0)
    label_smoothing: number(float, 0, 1, hi_open=True)
    validate_every: number(int, 1, 10_000)
    drop_last: boolean
    augment: boolean
    class_weight: class_weight
    distribute: distribute
    steps_per_execution: number(int, 1, 10_000)
    jit_compile: auto_or_boolean
    precision: precision


def unused(why):
    """A key the recipe does not read: null only."""
    return Annotated[None, Allowed(f"null ({why})")]


def check_augment(values, where, path="params.yaml"):
    """The policy's own keys are set (the others' may stay)."""
    for key in POLICY_KEYS[values["policy"]]:
        if values[key] is None:
            raise ParamsError(f"{path}: {where}.augment.{key} is null, but policy {values['policy']!r} reads it; "
                              "give it a value")


class Shared(Section):
    seed: number(int, 0, 2**31 - 1)
    augment: Augment
    train: Train


class Download(Section):
    url: rule(lambda v: isinstance(v, str) and re.match(r"^(https?|ftp)://\S+$", v), "an http(s) or ftp URL")
    sha256: rule(lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v),
                 "a sha256 hex digest (64 lowercase hex characters)")


class Prepare(Section):
    source: choice("cifar10", "images")
    images: rule(lambda v: isinstance(v, str) and v.strip() != "", "a folder path", str)
    side: or_null(number(int, 16, 512))
    test_fraction: number(float, 0, 1, lo_open=True, hi_open=True)
    max_unreadable: number(float, 0, 1)
    val_fraction: number(float, 0, 1, lo_open=True, hi_open=True)
    split_seed: number(int, 0, 2**31 - 1)
    train_limit: number(int, 0)
    test_limit: number(int, 0)


NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Only the project's own model modules, by name: the registry names code to import, and
# params.yaml (or a `-S` on the command line) must not be a way to import any module. dvc.yaml's
# train, export and parity stages declare its file, scripts/cifar/models/MODULE.py, as a dependency.
MODULE = NAME
module_name = rule(lambda v: isinstance(v, str) and MODULE.fullmatch(v),
                   "the name of a model module of the project's package, scripts/cifar/models/NAME.py (e.g. fast)")


class Entry(Section):  # models.NAME
    module: module_name
    label: rule(lambda v: isinstance(v, str) and v.strip(), "a non-empty string")
    tta: Annotated[Literal[0, 1, 2], Allowed("one of 0, 1, 2 (test-time augmentation: none, flip, flip + 1 px shifts)")]


def registry(value, path):
    """Check `models`: {name: Entry}."""
    if not isinstance(value, dict) or not value:
        raise ParamsError(f"{path}: 'models' must map each model's name to its entry, got {value!r}")
    for name, entry in value.items():
        if not (isinstance(name, str) and NAME.fullmatch(name)):
            raise ParamsError(f"{path}: models.{name} is not a valid model name; expected lowercase letters, "
                              "digits and _ (it names files: models/trained/NAME.keras)")
        validate(entry, Entry, f"models.{name}", path)


def model_sections(models):
    """The sections the registry names: each module's and each model's own."""
    return {*(entry["module"] for entry in models.values()), *models}


def merged(base, overrides):
    """`base` with `overrides` laid over it key by key, nested mappings merged the same way."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


# Sections of the stages after training (and fetch_weights'). Their schemas live with their
# stages (e.g. scripts/evaluate.py's SCHEMA, passed to load()), so that changing one touches only
# that stage: every training stage depends on this file. They are named here so that a misspelt
# section still fails every stage.
STAGE_SECTIONS = ("fetch_weights", "augment_preview", "evaluate", "robustness", "export", "parity")
SCHEMA = {"shared": Shared, "download": Download, "prepare": Prepare}


def section_model(annotation):
    """The Section model an annotation holds (itself, in Annotated or Optional), or None."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next((a for a in typing.get_args(annotation) if section_model(a)), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def message(error, model, values, where, path):
    """One line for pydantic's `error`: the key, the bad value and what is allowed."""
    keys, node, annotation, inside = [], values, model, model
    for part in error["loc"]:
        fields = inside.model_fields if inside else {}
        if part not in fields:
            whole = error["type"] == "extra_forbidden" and part == error["loc"][-1] and inside is not None
            keys += [part] if whole else []
            break
        keys.append(part)
        annotation = fields[part].rebuild_annotation()
        node = node.get(part) if isinstance(node, dict) else None
        inside = section_model(annotation)
    else:
        whole = True
    name = ".".join(map(str, [where, *keys] if where else keys))
    if whole and error["type"] == "extra_forbidden":
        return f"{path}: unknown key '{name}'; allowed keys here: {', '.join(sorted(inside.model_fields))}"
    if whole and error["type"] == "missing":
        return f"{path}: missing key '{name}'"
    return f"{path}: {name} = {node!r} is not allowed; expected {allowed_of(annotation)}"


def check(value, kind, name, path="params.yaml"):
    """Check one `value` (key `name`) against `kind`; ParamsError as `validate`."""
    try:
        pydantic.TypeAdapter(kind, config=ConfigDict(strict=True)).validate_python(value)
    except pydantic.ValidationError:
        raise ParamsError(f"{path}: {name} = {value!r} is not allowed; expected {allowed_of(kind)}") from None
    return value


def validate(values, model, where, path="params.yaml"):
    """Check `values` (section `where`) against `model`; ParamsError naming the key, the value and
    what is allowed. Returns `values`."""
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: '{where}' must be a mapping of keys, got {values!r}")
    try:
        model.model_validate(values)
    except pydantic.ValidationError as err:
        order = {"extra_forbidden": 0, "missing": 1}  # an unknown key first: it may be a misspelt missing one
        first = min(err.errors(), key=lambda e: order.get(e["type"], 2))
        raise ParamsError(message(first, model, values, where, Path(path))) from None
    return values


def load(sections, path="params.yaml", schemas=None):
    """{section: values} for a stage's sections, validated (`schemas`: the stage's own); top-level
    keys are checked too, so a misspelt section fails every stage."""
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
    registry(params["models"], path)
    for name, entry in params["models"].items():
        for section in (entry["module"], name):
            if section not in params:
                raise ParamsError(f"{path}: models.{name} needs the section '{section}' ("
                                  + ("its module's settings" if section == entry["module"] else
                                     "its overrides of its module's settings; {} for none") + "), which is missing")
    # A registered model's section may be one SCHEMA does not know (a new model's): its module's
    # rules check it (cifar.models.section).
    unknown = sorted(set(params) - {"models"} - set(SCHEMA) - set(STAGE_SECTIONS) - model_sections(params["models"]))
    if unknown:
        raise ParamsError(
            f"{path}: unknown section '{unknown[0]}'; allowed sections: models, {', '.join([*SCHEMA, *STAGE_SECTIONS])}, "
            "and the sections the models registry names (its modules and models)"
        )
    for section in sections:
        if section not in params:
            raise ParamsError(f"{path}: missing section '{section}'")
        model = (schemas or {}).get(section, SCHEMA.get(section))
        if model is not None:
            validate(params[section], model, section, path)
        elif section != "models" and not isinstance(params[section], dict):
            raise ParamsError(f"{path}: '{section}' must be a mapping of keys, got {params[section]!r}")
    return {section: params[section] for section in sections}
