"""The one error policy (router_model.errors), as the CLI applies it."""

import pytest

from router_model import cli
from router_model.errors import ConfigError, DataError, DataUnavailableError, RouterError, is_permanent
from router_model.pipeline import PipelineError
from router_model.scoring import ScoringError
from router_model.validation import InvalidInputError


@pytest.mark.parametrize(
    ("err", "permanent"),
    [
        (ConfigError("lr_c=-1"), True),
        (DataError("no rows"), True),
        (PipelineError("file changed"), True),
        (DataUnavailableError("Kaggle is down"), False),
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
    ],
)
def test_which_errors_are_permanent(err, permanent):
    assert is_permanent(err) is permanent


def package_errors() -> list[type]:
    """Every exception class router_model defines (imported modules, walked)."""
    import importlib
    import inspect
    import pkgutil

    import router_model

    found = set()
    for info in pkgutil.iter_modules(router_model.__path__):
        if info.name in ("cli", "__main__", "pyfunc_entry"):
            continue
        module = importlib.import_module(f"router_model.{info.name}")
        found |= {
            obj
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseException)
            and obj.__module__ == module.__name__
            and not obj.__name__.startswith("_")
        }
    return sorted(found, key=lambda k: k.__name__)


@pytest.mark.parametrize("kind", package_errors(), ids=lambda k: k.__name__)
def test_every_package_error_shares_the_base(kind):
    """Five classes on two bases used to be re-wrapped and told apart by type(err) is ValueError."""
    assert issubclass(kind, RouterError)


def test_the_error_walk_finds_them_all():
    names = {k.__name__ for k in package_errors()}
    assert names >= {
        "DataError",
        "PipelineError",
        "ScoringError",
        "InvalidInputError",
        "TableError",
        "ConfigError",
    }


@pytest.mark.parametrize(
    "err",
    [ConfigError("training param lr_c=-1 is not valid"), ScoringError("x"), InvalidInputError("row 0")],
    ids=lambda e: type(e).__name__,
)
def test_named_errors_are_one_line_and_exit_2(monkeypatch, capsys, err):
    def fail(_args):
        raise err

    monkeypatch.setitem(cli._COMMANDS, "status", fail)
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err == f"mushroom-router status: error: {err}\n"


def test_a_bug_keeps_its_traceback_after_a_hint(monkeypatch, capsys):
    """A plain ValueError used to exit 2 with one line, hiding a real bug's trace."""

    def fail(_args):
        raise ValueError("unexpected shape (3,)")

    monkeypatch.setitem(cli._COMMANDS, "status", fail)
    with pytest.raises(ValueError, match=r"unexpected shape \(3,\)"):
        cli.main(["status"])
    assert "unexpected ValueError, probably a bug; the traceback follows" in capsys.readouterr().err
