"""Offline checks of infra/bicep: every file parses (tree-sitter-bicep), the
modules are wired consistently, and the properties that matter are set.

No Bicep compiler runs offline, so what only `az deployment` checks is left to
a real deployment: API versions and property names Azure accepts, SKU
availability per region, role ids resolving, quota.
"""

import json
import pathlib
import re

import pytest
import tree_sitter_bicep
import yaml
from tree_sitter import Language, Parser

ROOT = pathlib.Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"
PARSER = Parser(Language(tree_sitter_bicep.language()))


class Expr(str):
    """A Bicep expression kept as source text (identifiers, calls, interpolations)."""


def value(node):
    t = node.type
    if t == "object":
        out = {}
        for p in node.named_children:
            if p.type == "object_property":
                key, val = p.named_children[0], p.named_children[-1]
                out[key.text.decode().strip("'")] = value(val)
        return out
    if t == "array":
        return [value(c) for c in node.named_children if c.type != "comment"]
    if t == "string" and all(c.type == "string_content" for c in node.named_children):
        return "".join(c.text.decode() for c in node.named_children)
    if t == "boolean":
        return node.text.decode() == "true"
    if t == "number":
        return int(node.text.decode())
    if t == "for_statement":
        body = [c for c in node.named_children if c.type == "object"]
        return value(body[-1]) if body else Expr(node.text.decode())
    return Expr(node.text.decode())


def parse(path):
    tree = PARSER.parse(path.read_bytes())
    assert not tree.root_node.has_error, f"{path} does not parse"
    params, resources, modules, outputs = {}, [], {}, {}
    for c in tree.root_node.named_children:
        kids = c.named_children
        if c.type == "parameter_declaration":
            params[kids[0].text.decode()] = c.text.decode()
        elif c.type == "resource_declaration":
            body = next(k for k in kids if k.type in ("object", "for_statement"))
            resources.append({"symbol": kids[0].text.decode(), "type": value(kids[1]), "body": value(body)})
        elif c.type == "module_declaration":
            body = next(k for k in kids if k.type == "object")
            modules[kids[0].text.decode()] = {"path": value(kids[1]), "body": value(body)}
        elif c.type == "output_declaration":
            outputs[kids[0].text.decode()] = c.text.decode()
    return {"params": params, "resources": resources, "modules": modules, "outputs": outputs}


def resource(parsed, type_prefix):
    found = [r for r in parsed["resources"] if r["type"].startswith(type_prefix + "@")]
    assert found, f"no {type_prefix} resource"
    return found[0]["body"]


def module(name):
    return parse(BICEP / "modules" / f"{name}.bicep")


def test_every_bicep_file_parses():
    files = list(BICEP.rglob("*.bicep"))
    assert len(files) >= 10
    for f in files:
        parse(f)


def test_main_passes_exactly_the_parameters_each_module_declares():
    main = parse(BICEP / "main.bicep")
    assert len(main["modules"]) >= 10
    for name, m in main["modules"].items():
        path = BICEP / m["path"]
        assert path.exists(), f"module {name}: {path} missing"
        declared = parse(path)["params"]
        passed = set(m["body"]["params"])
        assert passed == set(declared), f"module {name}: passes {sorted(passed)}, declares {sorted(declared)}"


def test_aks_has_keda_workload_identity_and_the_istio_mesh():
    aks = resource(module("aks"), "Microsoft.ContainerService/managedClusters")["properties"]
    assert aks["workloadAutoScalerProfile"]["keda"]["enabled"] is True
    assert aks["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert aks["oidcIssuerProfile"]["enabled"] is True
    assert aks["serviceMeshProfile"]["mode"] == "Istio"
    revisions = aks["serviceMeshProfile"]["istio"]["revisions"]
    ns = next(d for d in yaml.safe_load_all((ROOT / "keda" / "base" / "namespace.yaml").read_text()) if d and d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["istio.io/rev"] in revisions, "the namespace label must name a revision the cluster runs"
    fed = resource(module("aks"), "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials")["properties"]
    sa = next(d for d in yaml.safe_load_all((ROOT / "keda" / "base" / "namespace.yaml").read_text()) if d and d["kind"] == "ServiceAccount")
    assert fed["subject"].strip("'") == "system:serviceaccount:${namespace}:${serviceAccount}"
    main = parse(BICEP / "main.bicep")
    assert re.search(r"var namespace = '(\w+)'", (BICEP / "main.bicep").read_text()).group(1) == sa["metadata"]["namespace"]
    assert re.search(r"var serviceAccount = '(\w+)'", (BICEP / "main.bicep").read_text()).group(1) == sa["metadata"]["name"]
    assert "aks" in main["modules"]


def test_cosmos_container_is_partitioned_by_device_with_a_ttl_and_no_keys():
    cosmos = module("cosmos")
    account = resource(cosmos, "Microsoft.DocumentDB/databaseAccounts")["properties"]
    assert account["disableLocalAuth"] is True, "identities only in production"
    raw = resource(cosmos, "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers")["properties"]["resource"]
    assert raw["partitionKey"]["paths"] == ["/deviceId"]
    assert raw["defaultTtl"] == "defaultTtlSeconds", "TTL comes from a parameter"
    assert raw["id"] == "raw"


def test_event_hubs_speak_kafka_with_the_documented_partitions():
    eh = module("eventhubs")
    ns = resource(eh, "Microsoft.EventHub/namespaces")
    assert ns["properties"]["kafkaEnabled"] is True
    hubs = resource(eh, "Microsoft.EventHub/namespaces/eventhubs")
    assert hubs["properties"]["partitionCount"] == "partitions"
    text = (BICEP / "modules" / "eventhubs.bicep").read_text()
    for topic in ("telemetry.raw", "telemetry.aggregates", "telemetry.alerts", "telemetry.deadletter"):
        assert f"'{topic}'" in text


def test_skus_come_from_parameters():
    assert resource(module("postgres"), "Microsoft.DBforPostgreSQL/flexibleServers")["sku"] == "sku"
    assert resource(module("redis"), "Microsoft.Cache/redis")["properties"]["sku"] == "sku"
    assert resource(module("apim"), "Microsoft.ApiManagement/service")["sku"]["name"] == "sku"
    assert resource(module("eventhubs"), "Microsoft.EventHub/namespaces")["sku"]["name"] == "sku"


def test_api_management_requires_keys_and_rate_limits_ingest():
    apim = module("apim")
    api = resource(apim, "Microsoft.ApiManagement/service/apis")["properties"]
    assert api["subscriptionRequired"] is True
    assert api["protocols"] == ["https"]
    policy = resource(apim, "Microsoft.ApiManagement/service/apis/policies")["properties"]["value"]
    assert "rate-limit-by-key" in policy
    op = resource(apim, "Microsoft.ApiManagement/service/apis/operations")["properties"]
    assert (op["method"], op["urlTemplate"]) == ("POST", "/v1/telemetry")


def test_identities_are_least_privilege():
    broad = {"8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c", "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"}
    for f in (BICEP / "modules").glob("*.bicep"):
        text = f.read_text()
        for role in broad:
            assert role not in text, f"{f.name} grants Owner/Contributor/User Access Administrator"
    assert resource(module("keyvault"), "Microsoft.KeyVault/vaults")["properties"]["enableRbacAuthorization"] is True
    assert resource(module("redis"), "Microsoft.Cache/redis")["properties"]["enableNonSslPort"] is False


def deploy_secret_params():
    """Bicep parameter -> environment variable, the secure parameters infra/deploy.sh passes from the pipeline's secrets."""
    script = (ROOT / "infra" / "deploy.sh").read_text()
    return dict(p.split("=") for p in re.search(r"^SECRET_PARAMS=\(([^)]*)\)", script, re.M).group(1).split())


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_parameter_files_name_only_declared_parameters(env):
    doc = json.loads((BICEP / "params" / f"{env}.parameters.json").read_text())
    declared = parse(BICEP / "main.bicep")["params"]
    assert set(doc["parameters"]) <= set(declared), set(doc["parameters"]) - set(declared)
    passed = set(deploy_secret_params())
    assert not passed & set(doc["parameters"]), "a secret is in a file in the repository or passed twice"
    required = {n for n, src in declared.items() if "=" not in src}
    assert required <= set(doc["parameters"]) | passed, f"{env} lacks {required - set(doc['parameters']) - passed}"
    assert "reference" in doc["parameters"]["postgresAdminPassword"], "the password comes from Key Vault, not the file"


def secure_params(path):
    """The parameters a file declares with the @secure() decorator (decorators precede the declaration)."""
    kids = PARSER.parse(path.read_bytes()).root_node.named_children
    return {c.named_children[0].text.decode() for prev, c in zip([None] + kids, kids)
            if c.type == "parameter_declaration" and prev is not None and prev.type == "decorators"
            and any(d.text.decode() == "@secure()" for d in prev.named_children)}


def test_secrets_from_the_pipeline_are_secure_parameters():
    secure = secure_params(BICEP / "main.bicep")
    assert "postgresAdminPassword" in secure
    for name in deploy_secret_params():
        assert name in secure, f"{name} must be a @secure() parameter of main.bicep"
    declared, secure = parse(BICEP / "modules" / "secrets.bicep")["params"], secure_params(BICEP / "modules" / "secrets.bicep")
    for name in declared:
        if re.search(r"password|key|token", name, re.I) and not name.endswith("Name"):
            assert name in secure, f"secrets.bicep: {name} must be @secure()"


def test_every_key_vault_secret_the_cluster_reads_is_written_by_bicep():
    """The SecretProviderClass's objects and the TriggerAuthentication's secrets are Key Vault secrets that a
    Microsoft.KeyVault/vaults/secrets resource writes (none is left to be set by hand)."""
    written = {}
    for f in BICEP.rglob("*.bicep"):
        for r in parse(f)["resources"]:
            if r["type"].startswith("Microsoft.KeyVault/vaults/secrets@"):
                written[r["body"]["name"]] = r["body"]
    docs = [d for f in (ROOT / "keda" / "base").glob("*.yaml") if f.name != "kustomization.yaml" for d in yaml.safe_load_all(f.read_text()) if d]
    read = set()
    for spc in (d for d in docs if d["kind"] == "SecretProviderClass"):
        for item in yaml.safe_load(spc["spec"]["parameters"]["objects"])["array"]:
            read.add(yaml.safe_load(item)["objectName"])
    for ta in (d for d in docs if d["kind"] == "TriggerAuthentication"):
        read |= {s["name"] for s in ta["spec"]["azureKeyVault"]["secrets"]}
    assert read >= {"fleet-key", "eventhubs-connection-string", "redis-url", "database-url"}
    assert read <= set(written), f"no Bicep resource writes {read - set(written)}"
    # Derived from the resources, not typed in: Redis's access key, Event Hubs' connection string (TLS endpoints).
    assert "listKeys()" in written["redis-url"]["properties"]["value"] and written["redis-url"]["properties"]["value"].startswith("'rediss://")
    assert "listKeys().primaryConnectionString" in written["eventhubs-connection-string"]["properties"]["value"]
    for url in ("database-url", "database-url-readonly"):
        assert "sslmode=require" in written[url]["properties"]["value"], "PostgreSQL requires TLS (require_secure_transport)"
    rule = resource(module("eventhubs"), "Microsoft.EventHub/namespaces/authorizationRules")["properties"]
    assert sorted(rule["rights"]) == ["Listen", "Send"], "send and listen, not manage"


def test_the_cluster_can_reach_postgres_redis_and_cosmos():
    """AKS pods reach the data services over their public endpoints (no VNet
    integration or private endpoints here), so each must accept them:
    PostgreSQL through the "allow Azure services" firewall rule (0.0.0.0 to
    0.0.0.0, the cluster's outbound address being an Azure address), Redis and
    Cosmos DB with public network access on and no IP rules to shut it."""
    pg = module("postgres")
    server = resource(pg, "Microsoft.DBforPostgreSQL/flexibleServers")["properties"]
    assert server["network"]["publicNetworkAccess"] == "Enabled"
    assert "delegatedSubnetResourceId" not in server["network"], "private access would need the firewall rule gone and a VNet"
    rules = [r for r in pg["resources"] if r["type"].startswith("Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@")]
    assert rules, "no firewall rule: nothing can reach the server"
    assert any(r["body"]["properties"] == {"startIpAddress": "0.0.0.0", "endIpAddress": "0.0.0.0"} for r in rules), \
        "the cluster reaches PostgreSQL through Azure's allow-Azure-services rule"
    assert all(r["body"]["parent"] == "server" for r in rules)
    redis = resource(module("redis"), "Microsoft.Cache/redis")["properties"]
    assert redis["publicNetworkAccess"] == "Enabled"
    assert not [r for r in module("redis")["resources"] if r["type"].startswith("Microsoft.Cache/redis/firewallRules@")], \
        "a Redis firewall rule admits only its range: it would have to name the cluster's outbound address"
    cosmos = resource(module("cosmos"), "Microsoft.DocumentDB/databaseAccounts")["properties"]
    assert cosmos["publicNetworkAccess"] == "Enabled"
    assert cosmos["isVirtualNetworkFilterEnabled"] is False and not cosmos.get("ipRules"), "no rule shuts the cluster out"


def test_api_management_forwards_ingest_to_an_address_it_can_reach():
    """API Management runs outside the cluster: its ingest backend is a parameter (the KEDA HTTP
    add-on interceptor's proxy exposed by a load balancer or ingress), never a cluster-internal
    *.svc.cluster.local name, and it sends the Host the interceptor routes ingest by."""
    main = parse(BICEP / "main.bicep")
    assert "ingestBackendUrl" in main["params"], "the backend URL is a parameter of main.bicep"
    assert "@description(" in (BICEP / "main.bicep").read_text().split("param ingestBackendUrl")[0].rsplit("\nparam ", 1)[-1], \
        "ingestBackendUrl says what address it wants"
    passed = main["modules"]["apim"]["body"]["params"]
    assert passed["ingestBackendUrl"] == "ingestBackendUrl", "the module gets the parameter, not a hard-coded name"
    for f in BICEP.rglob("*.bicep"):
        assert ".svc.cluster.local" not in re.sub(r"@description\('(?:[^'\\]|\\.)*'\)", "", f.read_text()), \
            f"{f.name}: API Management cannot resolve cluster-internal names"
    for env in ("dev", "prod"):
        url = json.loads((BICEP / "params" / f"{env}.parameters.json").read_text())["parameters"]["ingestBackendUrl"]["value"]
        assert re.match(r"https?://", url) and ".svc.cluster.local" not in url and ".cluster.local" not in url
    apim = module("apim")
    assert resource(apim, "Microsoft.ApiManagement/service/apis")["properties"]["serviceUrl"] == "ingestBackendUrl"
    policy = resource(apim, "Microsoft.ApiManagement/service/apis/policies")["properties"]["value"]
    assert '<set-header name="Host" exists-action="override"><value>${ingestHost}</value></set-header>' in policy
    hso = next(d for d in yaml.safe_load_all((ROOT / "keda" / "base" / "ingest.yaml").read_text()) if d and d["kind"] == "HTTPScaledObject")
    host = re.search(r"var ingestHost = '([^']*)'", (BICEP / "main.bicep").read_text()).group(1)
    ns = re.search(r"var namespace = '(\w+)'", (BICEP / "main.bicep").read_text()).group(1)
    assert host.replace("${namespace}", ns) in hso["spec"]["hosts"], "the interceptor routes the Host API Management sends"
    assert passed["ingestHost"] == "ingestHost"
