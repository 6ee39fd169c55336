"""Trusted code only: a model server runs a version's code only if it is the code it was built with.

The router is logged as models-from-code: every registered version carries Python
(``code/router_model/`` and the entry file) that the model server executes when it loads the
version. Pickle-free loading protects nothing if anyone who can write to the registry can register
a copy with edited code. So each version records, at training time, the sha256 of its code
(:data:`TAG_CODE_SHA256`), and a server checks the downloaded bytes before it loads anything: the
code in the artifact must hash to the same value as the ``router_model`` package installed in the
server, and as the version's tag. Anything else is refused.

A deliberate code change therefore needs a new model-server image (or ``pip install`` of the new
package where the server runs): the server trusts exactly the code it was installed with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from router_model.errors import RouterError

PACKAGE_DIR = Path(__file__).resolve().parent
#: The version tag holding the sha256 of the code logged with the version.
TAG_CODE_SHA256 = "code_sha256"
#: Where MLflow puts ``code_paths`` in a logged model, and the package's folder there.
CODE_DIR = Path("code") / PACKAGE_DIR.name
#: The models-from-code entry file, which MLflow copies to the model's root and executes first.
ENTRY_NAME = "pyfunc_entry.py"


class UntrustedCodeError(RouterError):
    """A version's code is not the code this server runs; it is not loaded."""


def code_digest(package: Path) -> str:
    """sha256 over every ``.py`` file of a package folder, by relative path and content.

    Args:
        package: A ``router_model`` folder (installed, or inside a downloaded model).

    Returns:
        The hex digest; two folders with the same Python files give the same digest.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _with_entry(package_digest: str, entry: Path) -> str:
    return hashlib.sha256(package_digest.encode() + b"\0" + entry.read_bytes()).hexdigest()


def installed_digest() -> str:
    """The digest of the code this process runs: the ``router_model`` package and its entry file."""
    return _with_entry(code_digest(PACKAGE_DIR), PACKAGE_DIR / ENTRY_NAME)


def model_digest(model_dir: Path) -> str:
    """The digest of the code a downloaded model would run (what :func:`installed_digest` covers).

    Raises:
        UntrustedCodeError: If the model has no code folder or entry file of this package.
    """
    code, entry = model_dir / CODE_DIR, model_dir / ENTRY_NAME
    if not code.is_dir() or not entry.is_file():
        raise UntrustedCodeError(f"{model_dir} carries no {CODE_DIR} folder and {ENTRY_NAME}: not a router")
    return _with_entry(code_digest(code), entry)


def check_model(model_dir: Path, tags: Mapping[str, str], version: object) -> None:
    """Refuse a downloaded model whose code is not this server's own, before it is loaded.

    Args:
        model_dir: The local MLflow model folder (``MLmodel`` at its root).
        tags: The registered version's tags (:data:`TAG_CODE_SHA256`).
        version: The version, for messages.

    Raises:
        UntrustedCodeError: If the code folder is missing, differs from the installed package, or
            differs from what the version recorded when it was trained.
    """
    found, ours, recorded = model_digest(model_dir), installed_digest(), tags.get(TAG_CODE_SHA256)
    if found != ours:
        raise UntrustedCodeError(
            f"version {version}'s code (sha256 {found[:12]}) is not the code this server runs "
            f"({ours[:12]}); install that code in the server to serve it, or train a version with "
            "this code (mushroom-router train)"
        )
    if recorded != found:
        raise UntrustedCodeError(
            f"version {version}'s code (sha256 {found[:12]}) is not what it was trained with "
            f"({(recorded or 'none recorded')[:12]})"
        )
