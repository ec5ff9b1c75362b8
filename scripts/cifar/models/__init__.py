"""The model registry's code. Each model is one module of this package, named by its registry
entry (params.yaml `models.NAME.module`: MODULE, its file scripts/cifar/models/MODULE.py, imported
as cifar.models.MODULE), and holds everything that model is:

- `build(section, images=None, classes=None, weights=None)`: the uncompiled Keras model, from
  the model's settings (the module's section, with the model's own section laid over it:
  `section`), for the data's images (the training images, uint8 (N, side, side, 3): their shape
  is the model's input) and its `classes` (how many); it takes raw 0-255 RGB and scales it
  itself, so every exported format is called the same way. `images`, `classes` and `weights` (the
  file `fetch_weights` placed) are passed only to a builder that names them.
- `plan(section, shared, weights=None)` (optional): how it trains, a `Plan`: its phases, their
  settings, its augmentation and its recipe. Without one: one phase of `build` with the seed's
  settings (`shared.train`, `shared.augment`) and the seed's recipe (cifar.training.recipe).
- `SCHEMA` (a cifar.params.Section), and optionally `validate(section, where, path)` for the rules
  a schema cannot say: its params section is checked at every stage's start. A module without a
  SCHEMA is refused.
- its own Keras objects (layers, optimizer, schedule), registered under the package name
  `cifar.models.NAME`, so a saved model names the module that defines them and `load` imports
  exactly that module.

Only its models' stages depend on the module, so editing one model retrains that model alone.
Its training stage is `train@NAME` (dvc.yaml's foreach over the registry, scripts/train.py).
"""

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
    """The layer that brings `input_side` px images to the `side` a model works at, inside its
    graph (so its exports take the prepared side), or None at the same side: average pooling by
    an integer factor (each output pixel the mean of a k x k block: the area resize), bilinear
    resizing otherwise. Both are TF-Lite built-ins that quantize to int8."""
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
    """What a model trains with (a `recipe(train_cfg, steps_per_epoch)` returns it): its optimizer
    and loss, its callbacks, those of them whose counters a resume replays (`monitors`), and
    `prepare(model)`, run after compile in the strategy's scope (an optimizer that must see the
    model's weights, say)."""
    optimizer: object
    loss: object
    callbacks: list = field(default_factory=list)
    monitors: list = field(default_factory=list)
    prepare: Callable = None


@dataclass
class Phase:
    """One fit of a recipe in steps: `build(arrays, previous)` makes the model (`previous`: the
    best model of the phase before, a .keras path, or None), `train` its settings."""
    name: str | None
    build: Callable
    train: dict


@dataclass
class Plan:
    """How a model trains: its phases in order, the augmentation config of its training stream
    (cifar.augment.train_dataset), its recipe (train_cfg, steps_per_epoch) -> Recipe, and which
    of its module's recipes it is (`variant`, in the training metrics as `recipe`: "default", or
    "float32" where a module has one for that precision)."""
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
    """The registry entry's model module, imported (so its Keras objects are registered)."""
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
    """(registry entry, its settings checked by the model module's rules) for the model `name`."""
    from cifar import params

    loaded = params.load(["models"], path)["models"]
    if name not in loaded:
        raise params.ParamsError(f"{path}: no model '{name}' in the models registry; registered: {', '.join(loaded)}")
    return loaded[name], section(loaded[name], path, name)


def section(entry, path="params.yaml", name=None):
    """The model's settings: its module's section with the model's own section (`name`) laid over
    it (cifar.params.merged), checked by the module's rules (`validate` or `SCHEMA`) under the
    name of the section a value came from."""
    from cifar import params

    base = entry["module"]
    own = name or base
    loaded = params.load([base, own], path)
    values = params.merged(loaded[base], loaded[own]) if own != base else loaded[base]
    found = module(entry, f"models.{own}")
    where = own if own == base else f"{own} (over {base})"
    if not hasattr(found, "SCHEMA"):
        raise params.ParamsError(f"{found.__name__} has no SCHEMA: a model module declares the keys of its params "
                                 f"section (scripts/cifar/models/__init__.py), so that section '{own}' is checked")
    if hasattr(found, "validate"):
        found.validate(values, where, path)
    else:
        params.validate(values, found.SCHEMA, where, path)
    return values


def build(found, section, section_name, **inputs):
    """`found.build(section, **inputs)`, passing only the inputs the builder names; a missing key
    of its section is a ParamsError."""
    from cifar.params import ParamsError

    wanted = inspect.signature(found.build).parameters
    try:
        return found.build(section, **{k: v for k, v in inputs.items() if k in wanted})
    except KeyError as err:
        raise ParamsError(f"params.yaml: section '{section_name}' lacks the key {err.args[0]!r}, "
                          f"which {found.__name__}.build needs") from None


def plan(entry, section, shared, weights=None):
    """The model's training `Plan`: its module's `plan`, else one phase of its builder with the
    seed's settings and recipe."""
    found = module(entry)
    if hasattr(found, "plan"):
        return found.plan(section, shared, weights)
    if entry["recipe"] != "shared":
        from cifar.params import ParamsError

        raise ParamsError(f"params.yaml: models.*.recipe = {entry['recipe']!r}, but {found.__name__} has no plan of its "
                          "own: it trains with the seed's settings; set recipe: shared")
    return Plan([Phase(None, lambda arrays, previous: build(found, section, entry["module"], images=arrays["x_train"],
                                                             classes=len(arrays["class_names"]), weights=weights),
                       shared["train"])],
                shared["augment"])


def saved_config(path):
    """The config.json of the saved model `path` (.keras), as text."""
    with zipfile.ZipFile(path) as archive:
        return archive.read("config.json").decode()


def registered_modules(path, config=None):
    """The modules whose Keras objects the saved model `path` (.keras; or its `config`) names:
    `cifar.models.NAME` for a model's own layers, `cifar` for the shared ones (cifar.tta)."""
    config = saved_config(path) if config is None else config
    # A class is named in its "registered_name", a function in its "config": "PACKAGE>NAME" either way.
    return sorted(set(re.findall(r'"(cifar(?:\.\w+)*)>\w+"', config)))


# A layer's dtype policy as Keras saves it; a mixed one computes in bfloat16 or float16.
MIXED_POLICY = re.compile(r'("class_name": "DTypePolicy", "config": \{"name": )"mixed_b?float16"')


def low_precision(path, config=None):
    """Whether the saved model `path` (or its `config`) was built under a mixed-precision policy."""
    return bool(MIXED_POLICY.search(saved_config(path) if config is None else config))


def float32_copy(path, out):
    """A copy of the .keras file `path` at `out` whose every layer computes in float32: the same
    weights (mixed precision keeps the variables float32), the dtype policies rewritten. What a
    model trained in mixed precision is evaluated and exported as."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for item in source.infolist():
            payload = source.read(item.filename)
            if item.filename == "config.json":
                payload = MIXED_POLICY.sub(r'\1"float32"', payload.decode()).encode()
            copy.writestr(item, payload)
    return out


def load(path, tta=0, stage=None):
    """The one loader of a .keras model, as inference runs it: with test-time augmentation at
    level `tta` (cifar.tta.wrap; 0: none). It imports the modules whose objects the file names,
    and nothing else. A model trained in mixed precision comes back in float32 (`float32_copy`).
    ModelError, naming the file and the stage that writes it (`stage`; for models/trained/NAME.keras,
    train@NAME), if it cannot load."""
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
