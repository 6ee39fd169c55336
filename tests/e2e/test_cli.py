"""The `mushroom-router` command line, run as a user runs it (a subprocess)."""

import json
import os
import socket
import subprocess

import pandas as pd
import pytest

from router_model import features as F
from router_model import synthetic


@pytest.fixture
def cli_home(tmp_path):
    """Environment for a CLI run with its own store."""
    return {"MUSHROOM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def test_help_lists_the_commands(run_cli):
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("train", "serve", "predict", "promote", "status"):
        assert command in out.stdout


def test_train_then_weaker_train_says_why_it_is_challenger(run_cli, cli_home, tmp_path):
    path = tmp_path / "train.csv"
    synthetic.make_synthetic(2000).to_csv(path, index=False)
    first = run_cli("train", "--data", str(path), env=cli_home)
    assert first.returncode == 0, first.stderr
    assert "Alias: champion - first version: no champion yet" in first.stdout
    assert "naive_bayes          ROC-AUC 0." in first.stdout
    weak = run_cli(
        "train",
        "--data",
        str(path),
        "--param",
        "nb_bins=2",
        "--param",
        "nb_orders=1",
        "--param",
        "lr_bins=2",
        "--param",
        "lr_orders=1",
        env=cli_home,
    )
    assert weak.returncode == 0, weak.stderr
    assert (
        "Alias: challenger - version 2 is worse than champion version 1: "
        "on version 2's held-out rows (400) naive_bayes ROC-AUC" in weak.stdout
    )
    status = run_cli("status", env=cli_home)
    assert "@champion -> version 1" in status.stdout and "@challenger -> version 2" in status.stdout
    assert status.stdout.count("safe threshold (at most 1% poisonous among 'edible'): naive_bayes 0.") == 2
    assert "logistic_regression 0." in status.stdout and "(false alarms " in status.stdout
    missing = run_cli("promote", "99", env=cli_home)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "mushroom-router promote: error: mushroom-router has no version 99; registered versions: 1-2",
    )
    promoted = run_cli("promote", "2", env=cli_home)
    assert promoted.returncode == 0, promoted.stderr
    assert "@champion -> version 2" in run_cli("status", env=cli_home).stdout


def test_train_again_on_the_champions_data_says_so_in_one_line_and_force_trains(run_cli, cli_home, tmp_path):
    path = tmp_path / "train.csv"
    synthetic.make_synthetic(2000).to_csv(path, index=False)
    assert run_cli("train", "--data", str(path), env=cli_home).returncode == 0

    again = run_cli("train", "--data", str(path), "--param", "nb_bins=32", env=cli_home)
    assert again.returncode == 0, again.stderr
    [line] = again.stdout.splitlines()
    assert line.startswith("Nothing to train: data (sha256 ")
    assert line.endswith(
        "equal champion version 1's; nothing registered, champion unchanged "
        "(to retrain anyway: --force, DAG param force)"
    )
    assert "@champion -> version 1" in run_cli("status", env=cli_home).stdout

    forced = run_cli("train", "--data", str(path), "--force", env=cli_home)
    assert forced.returncode == 0, forced.stderr
    assert "Alias: champion - version 2 beats or matches champion version 1" in forced.stdout
    assert "--force" in run_cli("train", "--help").stdout


def test_train_synthetic_warns(run_cli, cli_home):
    out = run_cli("train", "--synthetic", env=cli_home)
    assert out.returncode == 0, out.stderr
    assert "WARNING: synthetic data" in out.stdout
    assert "NO REAL DATA" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "--data", "/no/such.csv"],
            "mushroom-router train: error: data file not found: /no/such.csv",
        ),
        (["train", "--kaggle"], "mushroom-router train: error: no Kaggle credentials"),
        (["train", "--synthetic", "--param", "depth=3"], "unknown training param(s) ['depth']"),
        (
            ["train", "--synthetic", "--min-improvement", "-1"],
            "mushroom-router train: error: min_improvement is -1.0; expected a ROC-AUC margin from 0.0 to 0.1",
        ),
        (["train", "--synthetic", "--min-improvement", "nan"], "error: min_improvement is nan; expected"),
        (
            ["predict", "/no/such.csv"],
            "mushroom-router predict: error: cannot load models:/mushroom-router@champion",
        ),
        (
            ["predict", "/no/such.csv", "/no/such/folder/out.csv"],
            "mushroom-router predict: error: output folder not found: /no/such/folder",
        ),
        (["predict", "/no/such.csv", "/"], "mushroom-router predict: error: output / is a folder"),
        (["promote", "0"], "mushroom-router promote: error: version must be a positive integer, got 0"),
        (["promote", "-1"], "mushroom-router promote: error: version must be a positive integer, got -1"),
        (["promote", "1"], "mushroom-router promote: error: no mushroom-router is registered in sqlite:///"),
    ],
)
def test_errors_are_one_line_without_traceback(run_cli, cli_home, args, message):
    out = run_cli(*args, env=cli_home)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["serve", "supervise"])
def test_serving_on_a_busy_port_fails_before_loading_anything(run_cli, registered, command):
    """Not after downloading the model and printing a curl example that reaches the other server."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(command, "--host", "127.0.0.1", "--port", str(port))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"mushroom-router {command}: error: cannot serve on 127.0.0.1:{port}: Address already in use "
        "(is another server running there? stop it, or choose another --port)"
    )
    assert "Serving" not in out.stdout and "Traceback" not in out.stderr


def test_bad_training_file_names_the_column(run_cli, cli_home, tmp_path):
    path = tmp_path / "bad.csv"
    frame = synthetic.make_synthetic(100).astype(object)
    frame.loc[5, "stem-color"] = 77
    frame.to_csv(path, index=False)
    out = run_cli("train", "--data", str(path), env=cli_home)
    assert out.returncode == 2
    assert "row 5, column 'stem-color': got 77; expected an integer code 0-12" in out.stderr
    assert "Traceback" not in out.stderr


def test_predict_writes_predictions_beside_the_input(run_cli, registered, tmp_path):
    rows = pd.DataFrame(F.example_rows() * 3, columns=list(F.ALL_FEATURES)).assign(id=range(6))
    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    out = run_cli("predict", str(src), str(tmp_path / "out.csv"), "--threshold", "0.3")
    assert out.returncode == 0, out.stderr
    scored = pd.read_csv(tmp_path / "out.csv")
    assert scored.columns.tolist() == [*F.ALL_FEATURES, "id", *F.OUTPUT_COLUMNS]
    assert scored["id"].tolist() == list(range(6))
    assert scored["model"].tolist() == ["naive_bayes", "logistic_regression"] * 3
    assert ((scored["poisonous_probability"] >= 0.3) == (scored["prediction"] == "poisonous")).all()


def test_predict_json_records_to_stdout(run_cli, registered, tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([{k.replace("-", "_"): v for k, v in r.items()} for r in F.example_rows()]))
    out = run_cli("predict", str(src))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].endswith("prediction,probability,poisonous_probability,model")
    assert len(out.stdout.splitlines()) == 3


def test_predict_bad_row_fails_and_writes_nothing(run_cli, registered, tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame([F.example_rows()[0] | {"cap-shape": 8}]).to_csv(src, index=False)
    target = tmp_path / "out.csv"
    out = run_cli("predict", str(src), str(target))
    assert out.returncode == 2
    assert "row 0, column 'cap-shape': got 8" in out.stderr
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_module_and_console_script_are_the_same_cli(registered):
    script = os.path.join(os.path.dirname(os.sys.executable), "mushroom-router")
    out = subprocess.run(
        [script, "status"], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert out.returncode == 0, out.stderr
    assert "@champion -> version" in out.stdout


@pytest.mark.parametrize(
    ("output", "explain"),
    [("out.csv", []), ("out.parquet", ["2"]), ("out.json", []), (None, ["3"])],
    ids=["csv", "parquet", "json", "stdout"],
)
def test_predict_explain_gives_the_in_process_explanations(
    run_cli, registered, tmp_path, golden_rows, output, explain
):
    """``--explain [K]``: JSON text in CSV (and stdout) and Parquet, nested objects in JSON."""
    import io

    import mlflow.pyfunc

    src = tmp_path / "golden.csv"
    golden_rows.to_csv(src, index=False)
    args = [
        "predict",
        str(src),
        *([str(tmp_path / output)] if output else []),
        "--quiet",
        "--explain",
        *explain,
    ]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    if output is None:
        scored = pd.read_csv(io.StringIO(out.stdout))
    elif output.endswith(".parquet"):
        scored = pd.read_parquet(tmp_path / output)
    elif output.endswith(".json"):
        scored = pd.DataFrame(json.loads((tmp_path / output).read_text()))
    else:
        scored = pd.read_csv(tmp_path / output)
    assert scored.columns.tolist() == [*F.ALL_FEATURES, *F.OUTPUT_COLUMNS, F.EXPLANATION]
    got = scored[F.EXPLANATION].tolist()
    if output is None or not output.endswith(".json"):
        assert all(isinstance(text, str) for text in got)
        got = [json.loads(text) for text in got]
    params = {"explain": True, **({"explain_top": int(explain[0])} if explain else {})}
    expected = mlflow.pyfunc.load_model(registered["model_uri"]).predict(golden_rows, params=params)
    assert got == expected[F.EXPLANATION].tolist()
    assert scored["poisonous_probability"].tolist() == expected["poisonous_probability"].tolist()
