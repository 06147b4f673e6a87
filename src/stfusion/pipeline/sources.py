"""The code each pipeline stage runs, written as small files that the stages depend on in DVC.

A stage's code is its notebook's ``stfusion`` imports and, for a method, the method's own modules,
followed through every import statement they hold (read with :mod:`ast`; nothing is run). Each unit
gets ``data/sources/<unit>.json``: the source files and their MD5. DVC reruns a stage when one of
its files changes, so an edit to the figures reruns the figures and the report, and an edit to one
model reruns that model's stages. Importing a module runs its packages' ``__init__`` files, so
those are part of its code too. A method's code comes from the registries' module names, which are
imported on first use (:mod:`stfusion.methods.registry`) and so are not followed from elsewhere; a
stage that runs every method (robustness) has every method's code in its own unit.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from stfusion.errors import InputError
from stfusion.io import atomic_dir, write_json
from stfusion.methods.models import AUTOENCODER, MODELS
from stfusion.methods.registry import METHODS
from stfusion.paths import code_root

NOTEBOOKS = {  # unit -> the notebook whose imports it follows
    "download": "01_download.py", "preprocess": "02_preprocess.py", "autoencoder": "03_autoencoder.py",
    "predict": "04_predict.py", "train": "05_train.py", "ablation": "06_ablation.py",
    "evaluate": "07_evaluate.py", "figures": "08_figures.py", "report": "09_report.py",
    "robustness": "10_robustness.py",
}
MODULES = {"check": "stfusion.pipeline.check"}
"""Units of a stage without a notebook -> the module it runs."""
RUNS_EVERY_METHOD = ("robustness",)
"""Units that predict with every method of the study: their code includes every method's."""


def package_folder() -> Path:
    """src/stfusion of the code root: the files the pipeline's stages depend on."""
    return code_root() / "src" / "stfusion"


def module_path(name: str) -> Path | None:
    """The file of module ``stfusion...`` (a package's ``__init__.py``), or None if there is none."""
    parts = name.split(".")[1:]
    folder = package_folder().joinpath(*parts)
    for path in (folder / "__init__.py", folder.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def imported_modules(source: str, *, filename: str = "<source>") -> set[str]:
    """The ``stfusion`` modules that ``source`` imports anywhere, in functions too."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as err:
        raise InputError(f"{filename}: cannot be parsed ({err.msg}, line {err.lineno})") from None
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from package import name``: name may be a submodule
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "stfusion" and module_path(name) is not None}


def with_packages(name: str) -> list[str]:
    """``name`` and every package above it: importing a module runs their ``__init__`` files first."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def closure(modules: Iterable[str]) -> set[str]:
    """Every module that importing ``modules`` runs."""
    seen: set[str] = set()
    todo = [package for name in modules for package in with_packages(name)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(name)
        if path is None:
            raise InputError(f"{name}: no such stfusion module")
        todo += [p for m in imported_modules(path.read_text(), filename=str(path)) for p in with_packages(m)]
    return seen


def method_modules(name: str) -> list[str]:
    """The modules of method ``name``'s own code (a deep model's generator, discriminator and, when its
    loss uses one, the feature autoencoder)."""
    if name == AUTOENCODER:
        return ["stfusion.methods.models.autoencoder"]
    method = METHODS[name]
    if not method.trainable:
        return [f"stfusion.methods.baselines.{method.code.split(':')[0]}"]
    spec = MODELS[name]
    targets = [spec.generator, *([spec.discriminator] if spec.discriminator else [])]
    modules = [f"stfusion.methods.models.{target.split(':')[0]}" for target in targets]
    return modules + (method_modules(AUTOENCODER) if spec.feature_encoder else [])


def units(notebooks: Path) -> dict[str, set[str]]:
    """Every unit's modules: ``<stage>`` (its notebook's imports) and ``method-<name>`` (a method's code)."""
    found = {}
    for unit, notebook in NOTEBOOKS.items():
        path = notebooks / notebook
        if not path.is_file():
            raise InputError(f"{path}: notebook of stage {unit} not found")
        found[unit] = closure(imported_modules(path.read_text(), filename=str(path)))
    for unit, module in MODULES.items():
        found[unit] = closure([module])
    for name in [*METHODS, AUTOENCODER]:
        found[f"method-{name}"] = closure(method_modules(name))
    for unit in RUNS_EVERY_METHOD:
        found[unit] |= set().union(*(found[f"method-{name}"] for name in METHODS))
    return found


def fingerprint(modules: set[str], root: Path) -> dict[str, str]:
    """``{path relative to root: md5}`` of the modules' files, sorted."""
    files = sorted(module_path(name) for name in modules)
    return {os.path.relpath(path, root): hashlib.md5(path.read_bytes()).hexdigest() for path in files}


def write_sources(out_dir: Path) -> list[Path]:
    """Write ``<unit>.json`` of every unit into ``out_dir`` (replaced as a whole); return the paths.
    Paths in them are relative to the code root, so every study's files agree."""
    root = code_root()
    found = units(root / "notebooks")
    with atomic_dir(out_dir) as tmp:
        for unit, modules in found.items():
            write_json(Path(tmp) / f"{unit}.json", fingerprint(modules, root))
    return [out_dir / f"{unit}.json" for unit in found]
