"""The logged model's own requirements, derived from the code it runs instead of listed by hand.

A registered router must load wherever an MLflow runtime builds an environment from the model's
``requirements.txt`` alone (``mlflow models serve --env-manager uv``, ``build-docker``, a Spark job
with ``env_manager="uv"``). A hand-kept list drifted once already: ``server_guard`` came to import
``orjson`` and the list did not. So the list is derived: starting at the models-from-code entry
file, every module of this package it imports (at module level or inside a function) is followed,
and every third-party top-level module found is mapped to the distribution that provides it and
pinned to the version installed here, as MLflow pins its own inferred requirements.

MLflow can infer requirements itself by loading the model in a subprocess and recording what gets
imported, but that misses imports made only inside the scoring server (the guard) and costs a
model load per training run; reading the import statements sees every path and costs
milliseconds.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path

PACKAGE = "router_model"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The source file of ``router_model[.x]``, or ``None`` for a name that is not a module."""
    parts = name.split(".")[1:]
    folder = PACKAGE_DIR.joinpath(*parts)
    for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, ``from x import y`` giving ``x`` and ``x.y``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_modules(entry: Path) -> set[str]:
    """Top-level third-party modules imported by ``entry`` and the package modules it reaches.

    Args:
        entry: A Python file (the models-from-code entry point).

    Returns:
        Top-level module names outside the standard library and this package.
    """
    seen: set[Path] = set()
    todo = [entry.resolve()]
    found: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == PACKAGE:
                module = _module_file(name)
                if module is not None:
                    todo.append(module)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


@cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def pinned_requirements(entry: Path) -> list[str]:
    """``name==version`` for every distribution the model's code imports, sorted.

    Raises:
        LookupError: If an imported module belongs to no installed distribution (the model
            could not be rebuilt elsewhere, so logging it must fail).
    """
    pins: set[str] = set()
    for module in sorted(third_party_modules(entry)):
        owners = _distributions().get(module)
        if not owners:
            raise LookupError(
                f"module {module!r}, imported by the model's code, belongs to no installed distribution"
            )
        # Several distributions can provide one module (mlflow and mlflow-skinny both ship
        # ``mlflow``): the one named like the module is the full one.
        owner = next(
            (o for o in owners if o.lower().replace("_", "-") == module.replace("_", "-")), owners[0]
        )
        pins.add(f"{owner}=={version(owner)}")
    return sorted(pins, key=str.lower)
