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
  probe paths match, topics and consumer groups equal the code's defaults;
- the SecretProviderClasses (no schema here: structural checks) against the
  Deployments: every secretKeyRef key is synced from a Key Vault object, and
  every Deployment reading a Secret mounts the CSI volume that syncs it, with
  the client id of its own ServiceAccount;
- least privilege against the Rust source (no binary needed): each function
  runs as its own ServiceAccount and reads its own Secret, which holds
  exactly the secret settings its config declares (`hide_env_values`) and
  uses, nothing another function needs.
What only a real cluster checks: the Istio PeerAuthentication (no schema
here), that images exist, that identities and Key Vault secrets resolve.

Needs TRIBUTARY_SCHEMAS_DIR (../shared/data/schemas) and TRIBUTARY_BIN_DIR
(the cargo target dir holding the function binaries); scripts/test sets both.
"""

import copy
import functools
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
NAMESPACE = "tributary"
CLIENT_ID = "azure.workload.identity/client-id"

FUNCTIONS = {
    # deployment name -> (binary, env vars that must be set)
    "ingest": ("tributary-ingest", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_FLEET_KEY", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "process": ("tributary-process", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "dashboard": ("tributary-dashboard", {"PORT", "DATABASE_URL", "REDIS_URL", "TRIBUTARY_OPERATOR_TOKEN", "TRIBUTARY_VIEWER_TOKEN"}),
    "analyze": ("tributary-analyze", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "archive": ("tributary-archive", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_COSMOS_ENDPOINT", "TRIBUTARY_COSMOS_AUTH", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
    "lake": ("tributary-lake", {"PORT", "TRIBUTARY_KAFKA_BROKERS", "TRIBUTARY_LAKE_URL", "TRIBUTARY_KAFKA_SASL_PASSWORD"}),
}

POSTGRESQL_TRIGGER_KEYS = {"connectionFromEnv", "query", "targetQueryValue", "activationTargetQueryValue"}
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


# Each function's typed config (clap), the source of the env vars it reads.
CONFIG_SOURCES = {
    "ingest": "functions/ingest/src/config.rs",
    "archive": "functions/archive/src/config.rs",
    "analyze": "functions/analyze/src/config.rs",
    "process": "functions/process/src/config.rs",
    "dashboard": "functions/dashboard/src/config.rs",
    "lake": "functions/lake/src/config.rs",
}
SHARED_CONFIG = "shared/src/config.rs"  # the groups the configs flatten (ListenArgs, KafkaArgs, CosmosArgs, LogArgs)


def _struct_fields(text, struct):
    """(attributes, field type) of each field of `pub struct <struct> { ... }` in Rust source; an attribute
    that rustfmt spread over several lines is joined into one."""
    m = re.search(r"pub struct " + struct + r"(<[^>]*>)?\s*\{", text)
    assert m, f"no struct {struct}"
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    fields, attrs, open_attr = [], [], None
    for line in text[m.end():i - 1].splitlines():
        line = line.strip()
        if open_attr is not None:
            open_attr += " " + line
            if open_attr.count("[") == open_attr.count("]"):
                attrs.append(open_attr)
                open_attr = None
            continue
        if line.startswith("#["):
            if line.count("[") == line.count("]"):
                attrs.append(line)
            else:
                open_attr = line
            continue
        field = re.match(r"pub \w+: ([\w:<>]+),", line)
        if field:
            fields.append((attrs, field.group(1)))
            attrs = []
    return fields


@functools.cache
def source_env(name):
    """env var -> True when the setting is secret (`hide_env_values = true`), for every env var the function's
    config reads, from the Rust source: its Parser struct and the structs it flattens (no binary needed)."""
    text = (ROOT / CONFIG_SOURCES[name]).read_text()
    shared = (ROOT / SHARED_CONFIG).read_text()
    struct = re.search(r"#\[derive\(Parser[^\n]*\n(?:.*\n)*?pub struct (\w+)", text).group(1)
    out = {}

    def walk(src, struct):
        for attrs, ty in _struct_fields(src, struct):
            if "#[command(flatten)]" in attrs:
                ty = ty.split("::")[-1].split("<")[0]
                walk(text if f"pub struct {ty}" in text else shared, ty)
            for a in attrs:
                env = re.search(r'\benv = "([A-Z0-9_]+)"', a)
                if a.startswith("#[arg(") and env:
                    out[env.group(1)] = "hide_env_values = true" in a

    walk(text, struct)
    assert "PORT" in out and "RUST_LOG" in out, f"could not read {name}'s config from {CONFIG_SOURCES[name]}"
    return out


# A secret setting a Deployment may leave unset, given the rest of its environment.
UNUSED_SECRETS = {
    "TRIBUTARY_COSMOS_KEY": lambda env: env.get("TRIBUTARY_COSMOS_AUTH") == "identity" or not env.get("TRIBUTARY_COSMOS_ENDPOINT"),
    "TRIBUTARY_SPLUNK_TOKEN": lambda env: not env.get("TRIBUTARY_SPLUNK_URL"),
    "TRIBUTARY_KAFKA_SASL_PASSWORD": lambda env: "SASL" not in (env.get("TRIBUTARY_KAFKA_OPTIONS") or ""),
}


def secret_settings_used(name, env):
    """The secret settings (source_env) a function with environment `env` needs."""
    return {k for k, secret in source_env(name).items() if secret and not UNUSED_SECRETS.get(k, lambda e: False)(env)}


def check_least_privilege(docs, env_of):
    """Each Deployment runs as its own ServiceAccount and reads only its own Secret, which holds exactly the
    secret settings its code declares and uses (from the Rust source), set from that Secret and never as a
    literal. When a SecretProviderClass syncs that Secret, it reads exactly those keys from Key Vault.
    `env_of(dep)` is the Deployment's environment (env and envFrom ConfigMaps)."""
    deps = [d for d in docs if d["kind"] == "Deployment"]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    spcs = {so["secretName"]: spc for spc in (d for d in docs if d["kind"] == "SecretProviderClass")
            for so in spc["spec"].get("secretObjects", [])}
    used_by = {}
    for dep in deps:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name, f"{name} runs as {pod['serviceAccountName']}, not its own ServiceAccount"
        assert name in accounts, f"no ServiceAccount {name}"
        env = env_of(dep)
        from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0].get("env", [])
                       if "secretKeyRef" in e.get("valueFrom", {})}
        secret_names = {r["name"] for r in from_secret.values()}
        for s in secret_names:
            assert s == f"{name}-secrets" or s.startswith(f"{name}-secrets-"), f"{name} reads the Secret {s}, not its own"
            used_by.setdefault(s, set()).add(name)
        known = source_env(name)
        for var in from_secret:
            assert known.get(var), f"{name}: {var} comes from a Secret but is not a secret setting of its config (hide_env_values)"
        for var in env:
            if known.get(var):
                assert var in from_secret, f"{name}: the secret setting {var} is set as a literal, not from its Secret"
        wanted = secret_settings_used(name, env)
        assert set(from_secret) == wanted, f"{name}: reads {sorted(from_secret)} from its Secret, its code needs {sorted(wanted)}"
        for s in secret_names:
            if s in spcs:
                spc = spcs[s]
                objects = {o["objectName"] for o in spc_objects(spc)}
                synced = {d["key"] for so in spc["spec"]["secretObjects"] if so["secretName"] == s for d in so["data"]}
                keys = {r["key"] for r in from_secret.values()}
                assert synced == keys, f"{spc['metadata']['name']} syncs {sorted(synced)}, {name} reads {sorted(keys)}"
                assert objects == keys, f"{spc['metadata']['name']} reads {sorted(objects)} from Key Vault, {name} needs {sorted(keys)}"
            else:
                assert s in secrets, f"{name}: no Secret {s} and no SecretProviderClass syncing it"
    for s, names in used_by.items():
        assert len(names) == 1, f"{s} is read by {sorted(names)}"


SPC_API = "secrets-store.csi.x-k8s.io/v1"
CSI_DRIVER = "secrets-store.csi.k8s.io"
# The Azure Key Vault provider's parameters (secrets-store-csi-driver-provider-azure).
AZURE_SPC_PARAMETERS = {"usePodIdentity", "useVMManagedIdentity", "userAssignedIdentityID", "clientID", "keyvaultName",
                        "cloudName", "cloudEnvFileName", "objects", "tenantId"}
AZURE_OBJECT_KEYS = {"objectName", "objectType", "objectVersion", "objectAlias", "objectEncoding", "objectFormat", "filePermission"}


def spc_objects(spc):
    """The Key Vault objects a SecretProviderClass reads: its `objects` parameter, YAML in YAML."""
    outer = yaml.safe_load(spc["spec"]["parameters"]["objects"])
    assert set(outer) == {"array"} and isinstance(outer["array"], list), "objects: an `array:` of YAML strings"
    objects = []
    for item in outer["array"]:
        assert isinstance(item, str), f"each object is a YAML string: {item!r}"
        o = yaml.safe_load(item)
        assert set(o) <= AZURE_OBJECT_KEYS, f"unknown object keys {set(o) - AZURE_OBJECT_KEYS}"
        assert o["objectType"] in ("secret", "key", "cert") and o["objectName"], o
        objects.append(o)
    return objects


def check_secret_provider_classes(docs):
    """Structural checks of every SecretProviderClass against the Deployments in `docs`; returns the Key Vault
    secret names read. secretKeyRefs to a Secret no SecretProviderClass syncs are left to the caller."""
    spcs = [d for d in docs if d["kind"] == "SecretProviderClass"]
    synced = {}  # Secret name -> (SecretProviderClass name, its keys)
    vault_secrets = set()
    for spc in spcs:
        name = spc["metadata"]["name"]
        assert spc["apiVersion"] == SPC_API, f"{name}: {spc['apiVersion']}"
        assert set(spc) == {"apiVersion", "kind", "metadata", "spec"}
        spec = spc["spec"]
        assert set(spec) <= {"provider", "parameters", "secretObjects"}, set(spec)
        assert spec["provider"] == "azure"
        params = spec["parameters"]
        assert set(params) <= AZURE_SPC_PARAMETERS, f"{name}: unknown parameters {set(params) - AZURE_SPC_PARAMETERS}"
        assert all(isinstance(v, str) for v in params.values()), "parameters are strings"
        assert params.get("usePodIdentity", "false") == "false" and "useVMManagedIdentity" not in params, "workload identity"
        for k in ("clientID", "keyvaultName", "tenantId", "objects"):
            assert params.get(k), f"{name}: {k} missing"
        objects = spc_objects(spc)
        readable = {o.get("objectAlias", o["objectName"]) for o in objects}
        vault_secrets |= {o["objectName"] for o in objects if o["objectType"] == "secret"}
        for so in spec.get("secretObjects", []):
            assert set(so) <= {"secretName", "type", "data", "labels", "annotations"}, set(so)
            keys = set()
            for item in so["data"]:
                assert set(item) == {"objectName", "key"}, item
                assert item["objectName"] in readable, f"{name}: syncs {item['objectName']}, not in objects"
                keys.add(item["key"])
            assert so["secretName"] not in synced, f"{so['secretName']} synced twice"
            synced[so["secretName"]] = (name, keys)
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        refs = [e["valueFrom"]["secretKeyRef"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        used = {r["name"] for r in refs if r["name"] in synced}
        for r in refs:
            if r["name"] in synced:
                assert r["key"] in synced[r["name"]][1], f"{dep['metadata']['name']}: key {r['key']} is not synced into {r['name']}"
        for secret in used:
            spc_name = synced[secret][0]
            vols = [v["name"] for v in pod.get("volumes", [])
                    if v.get("csi", {}).get("driver") == CSI_DRIVER and v["csi"].get("readOnly") is True
                    and v["csi"].get("volumeAttributes", {}).get("secretProviderClass") == spc_name]
            assert vols, f"{dep['metadata']['name']}: reads {secret} but mounts no read-only CSI volume of {spc_name} (the sync needs a mount)"
            assert any(m["name"] in vols and m.get("readOnly") is True for m in c.get("volumeMounts", [])), \
                f"{dep['metadata']['name']}: the container must mount {vols[0]} read-only"
        # The driver reads Key Vault with the pod's service account token: only the identity federated with that
        # account (the account's client id) can use it.
        sa = next((d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == pod.get("serviceAccountName")), None)
        for v in pod.get("volumes", []):
            spc_name = v.get("csi", {}).get("volumeAttributes", {}).get("secretProviderClass")
            spc = next((s for s in spcs if s["metadata"]["name"] == spc_name), None)
            if spc is not None:
                assert sa is not None, f"{dep['metadata']['name']}: mounts {spc_name} but its ServiceAccount is not rendered"
                assert spc["spec"]["parameters"]["clientID"] == sa["metadata"].get("annotations", {}).get(CLIENT_ID), \
                    f"{dep['metadata']['name']}: {spc_name}'s clientID is not its ServiceAccount's identity"
    return vault_secrets


def secret_key_refs(docs):
    return {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for d in docs if d["kind"] == "Deployment"
            for e in d["spec"]["template"]["spec"]["containers"][0].get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


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
            md = t["metadata"]
            if t["type"] == "postgresql":
                continue  # test_the_notification_queue_trigger
            assert t["type"] == "kafka"
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


def test_the_notification_queue_trigger():
    """Process also scales on its notification queue: a postgresql trigger on
    the connection string the container has, waking one replica only."""
    triggers = [(so, t) for so in of_kind("ScaledObject") for t in so["spec"]["triggers"] if t["type"] != "kafka"]
    assert [(so["metadata"]["name"], t["type"]) for so, t in triggers] == [("process", "postgresql")]
    so, t = triggers[0]
    md = t["metadata"]
    assert set(md) <= POSTGRESQL_TRIGGER_KEYS and all(isinstance(v, str) for v in md.values()), md
    dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == "process")
    assert md["connectionFromEnv"] in deployment_env(dep), "KEDA reads the connection string from the container"
    assert "notify_queue" in md["query"] and "done_at IS NULL" in md["query"]
    assert float(md["activationTargetQueryValue"]) == 0 and float(md["targetQueryValue"]) >= 100_000, "wakes one replica"
    assert "authenticationRef" not in t


def test_topics_and_groups_equal_the_code_defaults():
    for so in of_kind("ScaledObject"):
        name = so["spec"]["scaleTargetRef"]["name"]
        defaults = help_env(FUNCTIONS[name][0])
        for t in (t for t in so["spec"]["triggers"] if t["type"] == "kafka"):
            groups = {defaults["TRIBUTARY_CONSUMER_GROUP"], defaults.get("TRIBUTARY_NOTIFY_GROUP")}
            assert t["metadata"]["consumerGroup"] in groups, name
            if t["metadata"]["consumerGroup"] == defaults.get("TRIBUTARY_NOTIFY_GROUP"):
                assert t["metadata"]["topic"] == defaults["TRIBUTARY_ALERTS_TOPIC"], "the notifier reads the alerts"
            # The topics each consumer reads: process the analysis, the lake readings and aggregates, the others readings.
            reads = {
                "process": ("TRIBUTARY_RAW_TOPIC", "TRIBUTARY_AGGREGATES_TOPIC", "TRIBUTARY_ALERTS_TOPIC"),
                "lake": ("TRIBUTARY_RAW_TOPIC", "TRIBUTARY_AGGREGATES_TOPIC"),
            }.get(name, ("TRIBUTARY_RAW_TOPIC",))
            inputs = {defaults[k] for k in reads if k in defaults}
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
    assert pa and pa[0]["metadata"]["name"] == "default" and "selector" not in pa[0]["spec"] and pa[0]["spec"]["mtls"]["mode"] == "STRICT"
    # The only exceptions: the HTTP port the KEDA interceptor (outside the mesh) calls on each HTTP function.
    for p in pa[1:]:
        app = p["spec"]["selector"]["matchLabels"]["app"]
        dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == app)
        assert p["spec"]["mtls"]["mode"] == "STRICT"
        assert p["spec"]["portLevelMtls"] == {str(deployment_env(dep)["PORT"]): {"mode": "PERMISSIVE"}}, p
        assert app in {h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HTTPScaledObject")}, f"{app} is not behind the interceptor"


def test_secret_provider_classes_sync_every_key_the_deployments_read():
    docs = manifests()
    spcs = of_kind("SecretProviderClass")
    assert sorted(s["metadata"]["name"] for s in spcs) == sorted(f"{fn}-secrets" for fn in FUNCTIONS), "one per function"
    refs = secret_key_refs(docs)
    assert {n for n, _ in refs} <= {f"{fn}-secrets" for fn in FUNCTIONS}
    assert {k for _, k in refs} >= {"fleet-key", "database-url", "database-url-readonly", "redis-url", "operator-token", "viewer-token", "eventhubs-connection-string"}
    check_secret_provider_classes(docs)
    synced = {(so["secretName"], d["key"]) for s in spcs for so in s["spec"]["secretObjects"] for d in so["data"]}
    assert synced == refs, "sync exactly the keys read"
    # Every Deployment reads its Secret, so every one keeps its sync alive.
    assert all(any(v.get("csi") for v in d["spec"]["template"]["spec"].get("volumes", [])) for d in of_kind("Deployment"))


def test_each_function_runs_as_its_own_identity_and_reads_only_its_secrets():
    """The dashboard (and every other function) has its own ServiceAccount, and its own Secret holding exactly
    the secret settings its config declares and uses, derived from the Rust source."""
    docs = manifests()
    assert {d["metadata"]["name"] for d in of_kind("ServiceAccount")} == set(FUNCTIONS)
    for sa in of_kind("ServiceAccount"):
        assert CLIENT_ID in sa["metadata"]["annotations"], "infra/deploy.sh sets each client id"
    check_least_privilege(docs, deployment_env)
    # Spelt out for the dashboard, the one function with users: the read-only database URL, Redis and the operator
    # token; raw readings from Cosmos DB with its identity (no key); never the fleet key or a Kafka password.
    dash = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == "dashboard")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in dash["spec"]["template"]["spec"]["containers"][0]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"DATABASE_URL": "database-url-readonly", "REDIS_URL": "redis-url", "TRIBUTARY_OPERATOR_TOKEN": "operator-token",
                    "TRIBUTARY_VIEWER_TOKEN": "viewer-token"}
    assert secret_settings_used("dashboard", deployment_env(dash)) == set(refs)
    assert deployment_env(dash)["TRIBUTARY_COSMOS_AUTH"] == "identity"


def test_source_env_reads_the_configs():
    """The source parser finds what the configs declare, flattened fragments included."""
    assert {k for k, s in source_env("dashboard").items() if s} == {"DATABASE_URL", "REDIS_URL", "TRIBUTARY_COSMOS_KEY", "TRIBUTARY_OPERATOR_TOKEN", "TRIBUTARY_VIEWER_TOKEN"}
    assert source_env("ingest")["TRIBUTARY_FLEET_KEY"] is True and source_env("ingest")["TRIBUTARY_KAFKA_SASL_PASSWORD"] is True
    assert source_env("ingest")["TRIBUTARY_KAFKA_BROKERS"] is False
    assert "TRIBUTARY_KAFKA_BROKERS" not in source_env("dashboard"), "the dashboard flattens no Kafka settings"
    assert {k for k, s in source_env("archive").items() if s} == {"TRIBUTARY_COSMOS_KEY", "TRIBUTARY_KAFKA_SASL_PASSWORD"}


def test_least_privilege_checks_catch_mistakes():
    docs = manifests()
    dash = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dashboard")

    def broken(change):
        d = copy.deepcopy(dash)
        change(d)
        return [d if x is dash else x for x in docs]

    def shared_account(d):
        d["spec"]["template"]["spec"]["serviceAccountName"] = "process"
    with pytest.raises(AssertionError, match="not its own ServiceAccount"):
        check_least_privilege(broken(shared_account), deployment_env)

    def reads_the_fleet_key(d):
        d["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "TRIBUTARY_FLEET_KEY", "valueFrom": {"secretKeyRef": {"name": "dashboard-secrets", "key": "fleet-key"}}})
    with pytest.raises(AssertionError, match="TRIBUTARY_FLEET_KEY"):
        check_least_privilege(broken(reads_the_fleet_key), deployment_env)

    def another_secret(d):
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]:
            if e["name"] == "REDIS_URL":
                e["valueFrom"]["secretKeyRef"]["name"] = "process-secrets"
    with pytest.raises(AssertionError, match="not its own"):
        check_least_privilege(broken(another_secret), deployment_env)

    def literal_token(d):
        env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        env[:] = [e for e in env if e["name"] != "TRIBUTARY_OPERATOR_TOKEN"] + [{"name": "TRIBUTARY_OPERATOR_TOKEN", "value": "t"}]
    with pytest.raises(AssertionError, match="as a literal"):
        check_least_privilege(broken(literal_token), deployment_env)

    spc = next(d for d in docs if d["kind"] == "SecretProviderClass" and d["metadata"]["name"] == "dashboard-secrets")
    more = copy.deepcopy(spc)
    objects = yaml.safe_load(more["spec"]["parameters"]["objects"])
    objects["array"].append("objectName: fleet-key\nobjectType: secret\n")
    more["spec"]["parameters"]["objects"] = yaml.safe_dump(objects)
    more["spec"]["secretObjects"][0]["data"].append({"objectName": "fleet-key", "key": "fleet-key"})
    with pytest.raises(AssertionError, match="syncs"):
        check_least_privilege([more if x is spc else x for x in docs], deployment_env)


def test_secret_provider_class_checks_catch_mistakes():
    docs = manifests()
    spc = next(d for d in docs if d["kind"] == "SecretProviderClass" and d["metadata"]["name"] == "process-secrets")
    broken = copy.deepcopy(spc)
    broken["spec"]["secretObjects"][0]["data"] = [d for d in broken["spec"]["secretObjects"][0]["data"] if d["key"] != "redis-url"]
    with pytest.raises(AssertionError, match="redis-url"):
        check_secret_provider_classes([broken if d is spc else d for d in docs])
    broken = copy.deepcopy(spc)
    broken["spec"]["parameters"]["objects"] = broken["spec"]["parameters"]["objects"].replace("objectName: redis-url", "objectName: redis")
    with pytest.raises(AssertionError, match="not in objects"):
        check_secret_provider_classes([broken if d is spc else d for d in docs])
    broken = copy.deepcopy(spc)
    broken["spec"]["parameters"]["clientID"] = "11111111-1111-1111-1111-111111111111"
    with pytest.raises(AssertionError, match="not its ServiceAccount's identity"):
        check_secret_provider_classes([broken if d is spc else d for d in docs])
    unmounted = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "process"))
    del unmounted["spec"]["template"]["spec"]["volumes"]
    with pytest.raises(AssertionError, match="CSI volume"):
        check_secret_provider_classes([spc, unmounted])
