"""The Kubernetes example (docker/kubernetes/model-server.yaml) stays valid and wired to the server.

Validated offline against Kubernetes 1.37's strict schemas (``kubernetes-validate``: an unknown
field is an error, as ``kubectl apply --validate=strict`` makes it); its probes, ports and command
must agree with each other and with the compose model server. That a real server answers exactly
these probe paths is tested in tests/serving/test_probes.py.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml
from support import REPO, kubernetes_documents, model_server_container

KUBERNETES_VERSION = "1.37.0"


def test_every_document_validates_strictly():
    documents = kubernetes_documents()
    assert sorted(doc["kind"] for doc in documents) == ["Deployment", "Service"]
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (("spec", "template", "spec", "containers", 0, "readinessProbe"), "httpGett"),
        (("spec", "template", "spec", "containers", 0), "livenesProbe"),
        (("spec",), "minReplicas"),
    ],
)
def test_the_validation_catches_a_misspelt_field(where, field):
    """The check is strict: a field Kubernetes does not know fails it."""
    (deployment,) = [doc for doc in kubernetes_documents() if doc["kind"] == "Deployment"]
    bad = copy.deepcopy(deployment)
    target = bad
    for key in where:
        target = target[key]
    target[field] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match=field):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_probes_target_the_port_the_server_listens_on():
    container = model_server_container()
    command = container["command"]
    port = int(command[command.index("--port") + 1])
    (declared,) = container["ports"]
    assert declared["containerPort"] == port
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the kubelet
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (declared["name"], port), probe
    (service,) = [doc for doc in kubernetes_documents() if doc["kind"] == "Service"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [declared["name"]]


def test_readiness_asks_for_a_prediction_and_liveness_for_no_work():
    container = model_server_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"


def test_it_runs_what_the_compose_model_server_runs():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]["model-server"]
    container = model_server_container()
    assert container["command"] == compose["command"]
    assert container["image"] == compose["image"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (
        env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
        == compose["environment"]["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    )
    readiness = container["readinessProbe"]["httpGet"]["path"]
    assert f":{container['ports'][0]['containerPort']}{readiness}'" in " ".join(
        compose["healthcheck"]["test"]
    )
