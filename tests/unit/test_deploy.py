"""deploy/: the Kubernetes manifests validate, the probes and scrape settings agree, the KEDA
objects match their (hand-written) schema, and the Grafana dashboard uses only real metric names.

* built-in kinds (ConfigMap, Deployment, PodDisruptionBudget, Secret) are validated with
  ``kubernetes-validate`` (PyPI; it ships the Kubernetes OpenAPI schemas inside the package, so it
  works offline), strict mode: unknown fields fail;
* KEDA's ScaledObject and TriggerAuthentication are CRDs that package does not know: they are
  validated with ``jsonschema`` against ``deploy/k8s/schemas/*.json``, written from KEDA's
  documented CRD fields and the Kafka scaler's documented metadata (no package ships KEDA's
  openAPIV3Schema).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DASHBOARD = REPO / "deploy" / "grafana" / "distillwatch.json"
K8S_VERSION = "1.30.0"

METRICS = {
    "distillwatch_consumer_lag", "distillwatch_records_in_total", "distillwatch_records_out_total",
    "distillwatch_dlq_records_total", "distillwatch_flags_total", "distillwatch_batch_seconds",
    "distillwatch_checkpoint_seconds", "distillwatch_event_time_lag_seconds", "distillwatch_state_entries",
    "distillwatch_restore_remaining_records", "distillwatch_rebalances_total",
    "distillwatch_aborted_transactions_total", "distillwatch_up",
}
HISTOGRAMS = {"distillwatch_batch_seconds", "distillwatch_checkpoint_seconds"}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda.sh-v1alpha1.json",
}


def _docs() -> list[tuple[str, dict[str, Any]]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = list(kust["resources"]) + ["secret.example.yaml", "enforce.example.yaml"]
    out = []
    for f in files:
        for d in yaml.safe_load_all((K8S / f).read_text()):
            if d:
                out.append((f, d))
    return out


DOCS = _docs()


def _by_kind(kind: str) -> dict[str, Any]:
    [d] = [d for f, d in DOCS if d["kind"] == kind and f != "enforce.example.yaml"]
    return d


@pytest.mark.parametrize("doc", [d for _f, d in DOCS], ids=[f"{f}:{d['kind']}" for f, d in DOCS])
def test_manifest_validates(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[key]).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(doc)
    else:
        import kubernetes_validate

        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validators_reject_mistakes() -> None:
    """The validation above is not vacuous: typical mistakes fail."""
    import kubernetes_validate

    dep = json.loads(json.dumps(_by_kind("Deployment")))
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).read_text())
    so = json.loads(json.dumps(_by_kind("ScaledObject")))
    so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, schema)
    so = json.loads(json.dumps(_by_kind("ScaledObject")))
    so["spec"]["triggers"][0]["metadata"]["consumergroup"] = so["spec"]["triggers"][0]["metadata"].pop("consumerGroup")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, schema)


def test_probes_port_and_scrape_agree() -> None:
    cm = _by_kind("ConfigMap")["data"]
    port = int(cm["DISTILLWATCH_HTTP_PORT"])
    assert port == 9400
    pod = _by_kind("Deployment")["spec"]["template"]
    c = pod["spec"]["containers"][0]
    [p] = c["ports"]
    assert p["containerPort"] == port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": p["name"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": p["name"]}
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/path"] == "/metrics"
    # SASL password from a Secret reference, never inline
    env = {e["name"]: e for e in c["env"]}
    assert env["DISTILLWATCH_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "distillwatch-kafka"
    assert "DISTILLWATCH_SASL_PASSWORD" not in cm


def test_keda_and_pdb_target_the_detector() -> None:
    dep = _by_kind("Deployment")
    so, pdb = _by_kind("ScaledObject"), _by_kind("PodDisruptionBudget")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert "replicas" not in dep["spec"], "KEDA owns the replica count"
    [trig] = so["spec"]["triggers"]
    cm = _by_kind("ConfigMap")["data"]
    assert trig["type"] == "kafka"
    assert trig["metadata"]["consumerGroup"] == cm["DISTILLWATCH_GROUP_ID"] + ".account"
    assert trig["metadata"]["topic"] == cm["DISTILLWATCH_REQUESTS_TOPIC"]
    assert trig["authenticationRef"]["name"] == _by_kind("TriggerAuthentication")["metadata"]["name"]
    assert so["spec"]["maxReplicaCount"] >= so["spec"]["minReplicaCount"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    secret_keys = set(_by_kind("Secret")["stringData"])
    for ref in _by_kind("TriggerAuthentication")["spec"]["secretTargetRef"]:
        assert ref["name"] == "distillwatch-kafka" and ref["key"] in secret_keys


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["expr"]] if isinstance(node.get("expr"), str) else []
        for k, v in node.items():
            if k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                out.append(v["query"])
            out += _exprs(v)
        return out
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_dashboard_uses_only_known_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["panels"] and dash["uid"]
    exprs = _exprs(dash)
    used = {m for e in exprs for m in re.findall(r"\b(distillwatch_[a-z_]+)", e)}
    unknown = set()
    for m in used:
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        if m not in METRICS and not (base in HISTOGRAMS and base != m):
            unknown.add(m)
    assert not unknown, f"metrics not in the list: {sorted(unknown)}"
    # every metric of the list is shown somewhere
    shown = {re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in HISTOGRAMS else m
             for m in used}
    assert shown == METRICS
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
