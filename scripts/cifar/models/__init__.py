"""The model registry's code: each model is a module of this package, named by its registry entry
(params.yaml `models.NAME.module`), holding everything that model is:

- `build(section, images=None, classes=None, weights=None)`: the uncompiled Keras model from its
  settings (`section`: shared's train: and augment:, the module's section and the model's own laid
  over them), for the training images' shape and `classes`; it takes raw 0-255 RGB and scales
  itself. Only the inputs a builder names are passed.
- `plan(section, weights=None)` (optional): its `Plan`. Without one: one phase of `build` with its
  `train` (the seed's recipe, cifar.training.recipe) and `augment`.
- `SCHEMA` (a cifar.params.Section with `train` and `augment`; a module without one is refused),
  and optionally `validate(section, where, path)` for rules a schema cannot say.
- its Keras objects, registered under `cifar.models.NAME`, so `load` imports exactly that module.

Only its models' stages depend on the module: editing one model retrains that model alone."""

from __future__ import annotations

import importlib
import inspect
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cifar.outputs import StageError

IMPORTED = re.compile(r"cifar\.models\.[a-z][a-z0-9_]*")  # a model module's import name


def to_side(input_side, side):
    """The layer bringing `input_side` px images to `side` inside the graph, or None: average pooling
    by an integer factor, bilinear resizing otherwise (both int8-quantizable TF-Lite built-ins)."""
    import keras

    if input_side == side:
        return None
    if input_side > side and input_side % side == 0:
        factor = input_side // side
        return keras.layers.AveragePooling2D(factor, name=f"to_{side}px")
    return keras.layers.Resizing(side, side, interpolation="bilinear", name=f"to_{side}px")


class ModelError(StageError, ValueError):
    """A path that is not a model the pipeline can load or run."""


@dataclass
class Recipe:
    """What a model trains with: optimizer, loss, callbacks, those a resume replays (`monitors`), and
    `prepare(model)`, run after compile in the strategy's scope."""
    optimizer: object
    loss: object
    callbacks: list = field(default_factory=list)
    monitors: list = field(default_factory=list)
    prepare: Callable = None


@dataclass
class Phase:
    """One fit: `build(arrays, previous)` (previous: the phase before's best .keras, or None), `train`."""
    name: str | None
    build: Callable
    train: dict


@dataclass
class Plan:
    """How a model trains: its phases, the augmentation of its stream, its recipe, and which of its
    module's recipes it is (`variant`: "default", or "float32")."""
    phases: list
    augment: dict
    recipe: Callable = None
    variant: str = "default"

    @property
    def epochs(self):
        return sum(phase.train["epochs"] for phase in self.phases)


def train_stage(name):
    """The dvc.yaml stage that trains the registry's model `name` (writes models/trained/NAME.keras)."""
    return f"train@{name}"


def module(entry, where="models"):
    """The registry entry's model module, imported."""
    from cifar.params import MODULE, ParamsError

    name = entry["module"]
    if not MODULE.fullmatch(name):
        raise ParamsError(f"params.yaml: {where}.module = {name!r} is not allowed; a model is a module of the "
                          "project's package, scripts/cifar/models/NAME.py, named by NAME")
    try:
        return importlib.import_module("cifar.models." + name)
    except ModuleNotFoundError as err:
        raise ParamsError(f"params.yaml: {where}.module = {name!r} not found ({err}); expected "
                          f"scripts/cifar/models/{name}.py") from None


def entry(name, path="params.yaml"):
    """(registry entry, its settings checked by its module's rules) for the model `name`."""
    from cifar import params

    loaded = params.load(["models"], path)["models"]
    if name not in loaded:
        raise params.ParamsError(f"{path}: no model '{name}' in the models registry; registered: {', '.join(loaded)}")
    return loaded[name], section(loaded[name], path, name)


def section(entry, path="params.yaml", name=None):
    """The model's settings: `shared`'s train: and augment:, its module's section laid over them, then
    its own (`name`'s), checked by the module's `validate` or `SCHEMA` under the names they came from."""
    from cifar import params

    base = entry["module"]
    own = name or base
    loaded = params.load(["shared", base, own], path)
    missing = [key for key in ("train", "augment") if key not in loaded[base]]
    if missing:
        raise params.ParamsError(f"{path}: section '{base}' lacks '{missing[0]}': every model module's section has "
                                 "train: and augment:, laid over shared's ({} to keep shared's)")
    values = params.merged({"train": loaded["shared"]["train"], "augment": loaded["shared"]["augment"]}, loaded[base])
    values = params.merged(values, loaded[own]) if own != base else values
    found = module(entry, f"models.{own}")
    where = own if own == base else f"{own} (over {base})"
    if not hasattr(found, "SCHEMA"):
        raise params.ParamsError(f"{found.__name__} has no SCHEMA: a model module declares the keys of its params "
                                 f"section (scripts/cifar/models/__init__.py), so that section '{own}' is checked")
    if hasattr(found, "validate"):
        found.validate(values, where, path)
    else:
        params.validate(values, found.SCHEMA, where, path)
    params.check_augment(values["augment"], where, path)
    return values


def build(found, section, section_name, **inputs):
    """`found.build(section, **inputs)` with only the inputs it names; a missing key is a ParamsError."""
    from cifar.params import ParamsError

    wanted = inspect.signature(found.build).parameters
    try:
        return found.build(section, **{k: v for k, v in inputs.items() if k in wanted})
    except KeyError as err:
        raise ParamsError(f"params.yaml: section '{section_name}' lacks the key {err.args[0]!r}, "
                          f"which {found.__name__}.build needs") from None


def plan(entry, section, weights=None):
    """The model's `Plan`: its module's, else one phase of its builder with its `train` and `augment`."""
    found = module(entry)
    if hasattr(found, "plan"):
        return found.plan(section, weights)
    return Plan([Phase(None, lambda arrays, previous: build(found, section, entry["module"], images=arrays["x_train"],
                                                             classes=len(arrays["class_names"]), weights=weights),
                       section["train"])],
                section["augment"])


def saved_config(path):
    """The config.json of the saved model `path` (.keras), as text."""
    with zipfile.ZipFile(path) as archive:
        return archive.read("config.json").decode()


def registered_modules(path, config=None):
    """The modules whose Keras objects the saved model names ("PACKAGE>NAME")."""
    config = saved_config(path) if config is None else config
    # A class is named in its "registered_name", a function in its "config": "PACKAGE>NAME" either way.
    return sorted(set(re.findall(r'"(cifar(?:\.\w+)*)>\w+"', config)))


# A layer's dtype policy as Keras saves it; a mixed one computes in bfloat16 or float16.
MIXED_POLICY = re.compile(r'("class_name": "DTypePolicy", "config": \{"name": )"mixed_b?float16"')


def low_precision(path, config=None):
    """Whether the saved model was built under a mixed-precision policy."""
    return bool(MIXED_POLICY.search(saved_config(path) if config is None else config))


def float32_copy(path, out):
    """A copy of the .keras file whose layers compute in float32 (the same float32 variables)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for item in source.infolist():
            payload = source.read(item.filename)
            if item.filename == "config.json":
                payload = MIXED_POLICY.sub(r'\1"float32"', payload.decode()).encode()
            copy.writestr(item, payload)
    return out


def load(path, tta=0, stage=None):
    """The one loader of a .keras model, with test-time augmentation at `tta`. It imports the modules
    the file names and nothing else; a mixed-precision model comes back in float32. ModelError,
    naming the file and the stage that writes it, if it cannot load."""
    import keras

    from cifar import tta as views

    path = Path(path)
    if stage is None and path.parent.name == "trained":
        stage = train_stage(path.stem)
    if not path.is_file():
        redo = f": it is written by the '{stage}' stage; run `dvc repro {stage}`" if stage else ""
        raise ModelError(f"{path} not found{redo}")
    redo = f"; it is written by the '{stage}' stage: rerun it with `dvc repro --force {stage}`" if stage else ""
    try:
        config = saved_config(path)
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not a readable Keras model ({type(err).__name__}: {err}){redo}") from None
    for name in registered_modules(path, config):
        if name == "cifar":
            continue  # cifar.tta's layer, imported above
        if IMPORTED.fullmatch(name):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                raise ModelError(f"{path} needs the model module {name}, which this checkout lacks") from None
        else:
            raise ModelError(f"{path} names Keras objects of {name!r}, which is not a model module (cifar.models.NAME)")
    try:
        if low_precision(path, config):  # every artifact is float32 at its interface and inside
            with tempfile.TemporaryDirectory(prefix="float32-") as tmp:
                model = keras.saving.load_model(float32_copy(path, Path(tmp) / path.name), compile=False)
        else:
            model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # zip, h5 and deserialisation errors all mean the same to a user
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ModelError(f"{path} is not a readable Keras model ({type(err).__name__}: {first}){redo}") from None
    return views.wrap(model, tta)
