"""How the project starts MLflow's scoring server without ``mlflow models serve``, and what it skips.

The serving tests (test_serving.py, test_fuzz.py, test_probes.py, the metrics and inference-log
tests) run against servers started this way; here: that it gives the server what ``mlflow models
serve`` gives it, that what it skips changes no outcome, and the prewarmed server of ``supervise``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import requests
from mlflow.pyfunc import scoring_server
from mlflow.utils import requirements_utils
from support import free_port, wait_for_http

from router_model import features as F
from router_model import metrics, server_guard, serving, supervisor


def test_the_server_gets_the_variables_mlflow_models_serve_sets(tmp_path):
    """As MLflow's own ``get_cmd`` (what ``mlflow models serve --env-manager local`` runs)."""
    _, mlflow_env = scoring_server.get_cmd(str(tmp_path), port=5000, host="127.0.0.1", nworkers=1)
    ours = server_guard.scoring_server_env(tmp_path, base={})
    assert ours == {k: mlflow_env[k] for k in ours}
    assert set(ours) == {server_guard.SERVER_MODEL_PATH_ENV, server_guard.REQUEST_TIMEOUT_ENV}


def test_a_request_timeout_that_is_set_is_kept(tmp_path):
    env = server_guard.scoring_server_env(tmp_path, base={server_guard.REQUEST_TIMEOUT_ENV: "5"})
    assert env[server_guard.REQUEST_TIMEOUT_ENV] == "5"


def test_skipping_the_distribution_scan_keeps_the_requirement_check(monkeypatch):
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)

    def scan():
        raise AssertionError("scanned every installed distribution")

    monkeypatch.setattr(requirements_utils.importlib_metadata, "packages_distributions", scan)
    assert server_guard.skip_distribution_scan()
    assert not server_guard.skip_distribution_scan()  # seeded once
    installed = requirements_utils._get_installed_version("scikit-learn")
    assert requirements_utils._check_requirement_satisfied(f"scikit-learn=={installed}") is None
    mismatch = requirements_utils._check_requirement_satisfied("scikit-learn==0.0.1")
    assert str(mismatch) == f"scikit-learn (current: {installed}, required: scikit-learn==0.0.1)"
    missing = requirements_utils._check_requirement_satisfied("no-such-distribution-here==1.0")
    assert (
        str(missing)
        == "no-such-distribution-here (current: uninstalled, required: no-such-distribution-here==1.0)"
    )


SKOPS_PROBE = textwrap.dedent(
    """
    import sys
    from router_model import submodels
    skops_io = submodels.import_skops_for_serving()
    import skops.io._trusted_types as trusted
    print(len(trusted.SKLEARN_ESTIMATOR_TYPE_NAMES))
    for path in sys.argv[1:-1]:
        print(type(submodels.load_submodel(path)).__name__)
    try:
        skops_io.load(sys.argv[-1], trusted=list(submodels.TRUSTED_TYPES))
    except Exception as err:
        print(type(err).__name__, err)
    """
)


def test_a_serving_process_trusts_only_the_routers_scikit_learn_types(registered, isolated_env, tmp_path):
    """skops imported for serving trusts no scikit-learn estimator by default: the router's files
    load, a file holding any other estimator is refused."""
    import skops.io
    from sklearn.preprocessing import StandardScaler

    other = tmp_path / "scaler.skops"
    skops.io.dump(StandardScaler().fit([[0.0], [1.0]]), other)
    model = supervisor.trusted_copy(registered["model_uri"], isolated_env / "start-cache").path
    files = [str(model / "artifacts" / f"{route}.skops") for route in F.ROUTES]
    out = subprocess.run(
        [sys.executable, "-c", SKOPS_PROBE, *files, str(other)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "0"
    assert out[1:3] == ["LogOddsCalibrated", "LogOddsCalibrated"]
    assert out[3].startswith("UntrustedTypesFoundException") and "StandardScaler" in out[3]


@pytest.mark.serving
def test_a_prewarmed_server_serves_the_folder_it_is_handed(registered, isolated_env):
    model = supervisor.trusted_copy(registered["model_uri"], isolated_env / "start-cache").path
    port = free_port()
    spare = serving.prewarm(port=port)
    other_port = free_port()
    assert serving._take_spare(["--host", "127.0.0.1", "--port", str(other_port), "--workers", "1"]) is None
    proc = serving.start_server(str(model), port=port, extra_env=metrics.served_env(7, 2))
    try:
        assert proc is spare  # handed over, not a new process
        wait_for_http(f"http://127.0.0.1:{port}/ping", proc)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": F.example_rows()}, timeout=30
        )
        assert [row["model"] for row in answer.json()["predictions"]] == list(F.ROUTES)
        assert requests.get(f"http://127.0.0.1:{port}/ready", timeout=30).json() == {"ready": True}
        scrape = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert "mushroom_router_served_version 7.0" in scrape  # the environment handed over with the folder
    finally:
        assert serving.stop_server(proc) == 0


def test_an_unused_prewarmed_server_exits_with_its_starter():
    """Its stdin closes when the process that started it exits (here: closed by hand)."""
    spare = serving.prewarm(port=free_port())
    try:
        spare.stdin.close()
        assert spare.wait(timeout=300) == 0
    finally:
        serving._SPARE.clear()
        serving.stop_server(spare)


@pytest.mark.serving
def test_a_prewarmed_server_that_died_is_replaced_by_a_new_one(registered, isolated_env):
    model = supervisor.trusted_copy(registered["model_uri"], isolated_env / "start-cache").path
    port = free_port()
    spare = serving.prewarm(port=port)
    spare.kill()
    spare.wait()
    proc = serving.start_server(str(model), port=port)
    try:
        assert proc is not spare and spare not in [p for _, p in serving._SPARE]
        wait_for_http(f"http://127.0.0.1:{port}/ready", proc)
    finally:
        serving.stop_server(proc)


@pytest.mark.parametrize("module", ["router_model.supervisor", "router_model.registry"])
def test_reading_the_registry_imports_no_model_library(module):
    """The supervisor (and `serve` before its server starts) reads the registry on one core while
    the server imports scikit-learn and skops on the other: it must not import them itself."""
    probe = f"import sys, {module}; print(sorted(m for m in ('sklearn', 'skops') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
