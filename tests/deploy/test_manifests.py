"""Offline validation of the Kubernetes/KEDA manifests in keda/base/ (the
overlays in keda/overlays/ are rendered and checked in test_kustomize.py).

What is checked here (no cluster, no network):
- core objects (Deployment, Service, ConfigMap, ...) against the Kubernetes
  1.33 schemas of kubernetes-validate, strictly (unknown fields rejected);
- KEDA ScaledObjects, TriggerAuthentications and HTTP add-on HTTPScaledObjects
  against the CRDs' own openAPIV3Schema, tightened so misspelt keys fail;
- the kafka trigger's free-form metadata (known keys, string values);
- the manifests against the code: every env var set is one the function
  reads (from the binaries' --help), the required ones are set, ports and
  probe paths match, topics and consumer groups equal the code's defaults.
What only a real cluster checks: the Istio PeerAuthentication (no schema
here), that images exist, that identities and Key Vault secrets resolve.

Needs TRIBUTARY_SCHEMAS_DIR (../shared/data/schemas) and TRIBUTARY_BIN_DIR
(the cargo target dir holding the function binaries); scripts/test sets both.
"""

import copy
import os
import pathlib
import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEDA_DIR = ROOT / "keda" / "base"
PARTITIONS = 12

FUNCTIONS = {
    # deployment name -> (binary, env vars that must be set)
    "ingest": ("tributary-ingest", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_FLEET_KEY", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "process": ("tributary-process", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "dashboard": ("tributary-dashboard", {"PORT", "DATABASE_URL", "REDIS_URL", "TRIBUTARY_OPERATOR_TOKEN"}),
    "analyze": ("tributary-analyze", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "archive": ("tributary-archive", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_COSMOS_ENDPOINT", "TRIBUTARY_COSMOS_AUTH", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
}

KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag", "limitToPartitionsWithLag",
    "partitionLimitation", "version", "sasl", "tls", "unsafeSsl",
}


def env_dir(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with scripts/test", pytrace=False)
    path = pathlib.Path(value)
    if not path.is_dir():
        pytest.fail(f"{name}={value} is not a directory", pytrace=False)
    return path


def manifests():
    docs = []
    for f in sorted(KEDA_DIR.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs.append(d)
    return docs


def of_kind(kind):
    return [d for d in manifests() if d["kind"] == kind]


def tighten(schema):
    """Reject unknown keys wherever the CRD lists properties (Kubernetes would prune them silently)."""
    if isinstance(schema, dict):
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            tighten(v)
    elif isinstance(schema, list):
        for v in schema:
            tighten(v)
    return schema


def crd_validator(path, version="v1alpha1"):
    crd = yaml.safe_load((env_dir("TRIBUTARY_SCHEMAS_DIR") / path).read_text())
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    return jsonschema.Draft7Validator(tighten(copy.deepcopy(schema)))


CRDS = {
    "ScaledObject": "keda/keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda/keda.sh_triggerauthentications.yaml",
    "HTTPScaledObject": "keda-http-add-on/http.keda.sh_httpscaledobjects.yaml",
}


def help_env(binary):
    """env var -> default, as the binary's --help documents them (run with an empty environment)."""
    exe = env_dir("TRIBUTARY_BIN_DIR") / binary
    if not exe.exists():
        pytest.fail(f"{exe} not found: build the workspace first (scripts/test does)", pytrace=False)
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env={}, check=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"\[env: ([A-Z0-9_]+)(?:=[^\]]*)?\]\s*(?:\[default: ([^\]]*)\])?", out)}


def deployment_env(dep):
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for src in c.get("envFrom", []):
        name = src["configMapRef"]["name"]
        cm = next(d for d in of_kind("ConfigMap") if d["metadata"]["name"] == name)
        for k, v in cm["data"].items():
            env.setdefault(k, v)
    return env


def test_core_objects_are_valid_kubernetes_1_33_strictly():
    core = [d for d in manifests() if d["apiVersion"] in ("v1", "apps/v1")]
    assert len(core) >= 6
    for d in core:
        kubernetes_validate.validate(d, "1.33.0", strict=True)


def test_core_validation_catches_a_misspelt_field():
    dep = copy.deepcopy(of_kind("Deployment")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 8080}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.33.0", strict=True)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_keda_objects_match_their_crds(kind):
    objs = of_kind(kind)
    assert objs, f"no {kind} in keda/base/"
    v = crd_validator(CRDS[kind])
    for o in objs:
        errors = sorted(v.iter_errors(o), key=str)
        assert not errors, f"{kind}/{o['metadata']['name']}: " + "; ".join(e.message for e in errors)


def test_crd_validation_catches_a_misspelt_key():
    so = copy.deepcopy(of_kind("ScaledObject")[0])
    so["spec"]["minReplicasCount"] = 0
    assert list(crd_validator(CRDS["ScaledObject"]).iter_errors(so)), "a misspelt key must be reported"
    hso = copy.deepcopy(of_kind("HTTPScaledObject")[0])
    hso["spec"]["replicas"]["maximum"] = 3
    assert list(crd_validator(CRDS["HTTPScaledObject"]).iter_errors(hso))


def test_kafka_triggers_are_well_formed_and_capped_at_the_partitions():
    for so in of_kind("ScaledObject"):
        spec = so["spec"]
        assert spec["minReplicaCount"] == 0, "consumers scale to zero"
        assert 1 <= spec["maxReplicaCount"] <= PARTITIONS, "KEDA never needs more consumers than partitions"
        for t in spec["triggers"]:
            assert t["type"] == "kafka"
            md = t["metadata"]
            unknown = set(md) - KAFKA_TRIGGER_KEYS
            assert not unknown, f"unknown kafka trigger keys {unknown}"
            assert all(isinstance(v, str) for v in md.values()), f"trigger metadata values must be strings: {md}"
            for k in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold"):
                assert k in md, f"{so['metadata']['name']}: kafka trigger lacks {k}"
            assert int(md["activationLagThreshold"]) < int(md["lagThreshold"])
            assert t["authenticationRef"]["name"] in {a["metadata"]["name"] for a in of_kind("TriggerAuthentication")}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_env_vars_match_what_the_code_reads(name):
    binary, required = FUNCTIONS[name]
    known = help_env(binary)
    assert len(known) >= 6, f"could not read {binary}'s env vars from --help"
    dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == name)
    env = deployment_env(dep)
    unknown = set(env) - set(known)
    assert not unknown, f"{name} sets env vars the code does not read: {unknown}"
    missing = required - set(env)
    assert not missing, f"{name} must set {missing}"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_ports_probes_and_termination_match(name):
    dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == name)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    port = int(deployment_env(dep)["PORT"])
    assert [p["containerPort"] for p in c["ports"]] == [port]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    svc = next(s for s in of_kind("Service") if s["metadata"]["name"] == name)
    assert svc["spec"]["ports"][0]["targetPort"] == port
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    grace = int(deployment_env(dep).get("TRIBUTARY_SHUTDOWN_GRACE_SECS") or help_env(FUNCTIONS[name][0]).get("TRIBUTARY_SHUTDOWN_GRACE_SECS") or 20)
    assert pod["terminationGracePeriodSeconds"] > grace, "Kubernetes must wait longer than the function drains"
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]


def test_topics_and_groups_equal_the_code_defaults():
    for so in of_kind("ScaledObject"):
        name = so["spec"]["scaleTargetRef"]["name"]
        defaults = help_env(FUNCTIONS[name][0])
        for t in so["spec"]["triggers"]:
            assert t["metadata"]["consumerGroup"] == defaults["TRIBUTARY_CONSUMER_GROUP"], name
            inputs = {defaults[k] for k in ("TRIBUTARY_RAW_TOPIC", "TRIBUTARY_AGGREGATES_TOPIC", "TRIBUTARY_ALERTS_TOPIC") if k in defaults and not (name != "process" and k != "TRIBUTARY_RAW_TOPIC")}
            assert t["metadata"]["topic"] in inputs, f"{name} scales on {t['metadata']['topic']}, reads {inputs}"
    for name, (binary, _) in FUNCTIONS.items():
        defaults = help_env(binary)
        dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == name)
        for k, v in deployment_env(dep).items():
            if k.endswith("_TOPIC") or k == "TRIBUTARY_CONSUMER_GROUP":
                assert v == defaults[k], f"{name}: {k}={v} differs from the code's default {defaults[k]}"


def test_http_functions_scale_from_zero_through_the_interceptor():
    for h in of_kind("HTTPScaledObject"):
        spec = h["spec"]
        assert spec["replicas"]["min"] == 0
        dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == spec["scaleTargetRef"]["name"])
        assert spec["scaleTargetRef"]["port"] == int(deployment_env(dep)["PORT"])
        metric = spec["scalingMetric"]
        assert any(m.get("targetValue", 0) > 0 for m in metric.values()), "scale on request rate or concurrency"


def test_namespace_is_meshed_with_strict_mtls():
    ns = of_kind("Namespace")[0]
    assert any(k in ns["metadata"]["labels"] for k in ("istio.io/rev", "istio-injection"))
    pa = of_kind("PeerAuthentication")
    assert pa and pa[0]["spec"]["mtls"]["mode"] == "STRICT"
