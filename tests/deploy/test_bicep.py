"""Offline checks of infra/bicep: every file parses (tree-sitter-bicep), the
modules are wired consistently, and the properties that matter are set: one
identity per workload holding only what it uses (per-secret Key Vault reads
equal to its SecretProviderClass, Cosmos DB read-only for the dashboard),
private access to PostgreSQL and Redis in one virtual network, and API
Management in that network forwarding to the interceptor's internal load
balancer at the address keda/base/interceptor.yaml gives it.

No Bicep compiler runs offline, so what only `az deployment` checks is left to
a real deployment: API versions and property names Azure accepts, SKU
availability per region, role ids resolving, quota.
"""

import ipaddress
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
    params, resources, modules, outputs, variables = {}, [], {}, {}, {}
    for c in tree.root_node.named_children:
        kids = c.named_children
        if c.type == "parameter_declaration":
            params[kids[0].text.decode()] = c.text.decode()
        elif c.type == "variable_declaration":
            variables[kids[0].text.decode()] = value(kids[-1])
        elif c.type == "resource_declaration":
            body = next(k for k in kids if k.type in ("object", "for_statement", "if_statement"))
            condition = None
            if body.type == "if_statement":  # `= if (<condition>) { ... }`: deployed only when the condition holds
                condition = body.named_children[0].text.decode()
                body = body.named_children[-1]
            resources.append({"symbol": kids[0].text.decode(), "type": value(kids[1]), "body": value(body), "condition": condition})
        elif c.type == "module_declaration":
            body = next(k for k in kids if k.type in ("object", "if_statement"))
            condition = None
            if body.type == "if_statement":
                condition = body.named_children[0].text.decode()
                body = body.named_children[-1]
            modules[kids[0].text.decode()] = {"path": value(kids[1]), "body": value(body), "condition": condition}
        elif c.type == "output_declaration":
            outputs[kids[0].text.decode()] = c.text.decode()
    return {"params": params, "resources": resources, "modules": modules, "outputs": outputs, "variables": variables}


def resource(parsed, type_prefix):
    found = [r for r in parsed["resources"] if r["type"].startswith(type_prefix + "@")]
    assert found, f"no {type_prefix} resource"
    return found[0]["body"]


def module(name):
    return parse(BICEP / "modules" / f"{name}.bicep")


def base_docs(file):
    return [d for d in yaml.safe_load_all((ROOT / "keda" / "base" / file).read_text()) if d]


def output_expr(parsed, name):
    """The expression an output returns (`output <name> <type> = <expr>`)."""
    return parsed["outputs"][name].split("=", 1)[1].strip()


def decorated(path):
    """Parameter name -> the text of its decorators (the node just before the declaration)."""
    kids = PARSER.parse(path.read_bytes()).root_node.named_children
    return {c.named_children[0].text.decode(): (prev.text.decode() if prev is not None and prev.type == "decorators" else "")
            for prev, c in zip([None] + kids, kids) if c.type == "parameter_declaration"}


WORKLOADS = ["ingest", "archive", "analyze", "process", "dashboard", "lake"]  # the functions, one identity each
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
COSMOS_READER, COSMOS_CONTRIBUTOR = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"


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
    fed = resource(module("aks"), "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials")
    assert fed["properties"]["subject"].strip("'") == "system:serviceaccount:${f.namespace}:${f.serviceAccount}"
    assert fed["parent"] == "identities[i]", "each federation on its own identity"
    main = parse(BICEP / "main.bicep")
    assert main["variables"]["namespace"] == "tributary" == ns["metadata"]["name"]
    assert "aks" in main["modules"]


def federations():
    """identity module symbol -> (namespace, service account), from what main.bicep hands aks.bicep."""
    main = parse(BICEP / "main.bicep")
    out = {}
    for f in main["modules"]["aks"]["body"]["params"]["federatedServiceAccounts"]:
        symbol = re.fullmatch(r"(\w+)\.outputs\.name", f["identityName"]).group(1)
        ns = main["variables"]["namespace"] if f["namespace"] == "namespace" else f["namespace"]
        assert symbol not in out, f"{symbol} federated twice"
        out[symbol] = (ns, f["serviceAccount"])
    return out


def test_each_workload_runs_as_its_own_identity():
    """One user-assigned identity per function and one for KEDA's scaler, each federated with exactly one service
    account: the function's own (its Deployment runs as it), KEDA's the add-on's keda-operator. Each identity's
    client id is an output infra/deploy.sh puts on that account (checked in test_kustomize.py)."""
    main = parse(BICEP / "main.bicep")
    identities = {s: m for s, m in main["modules"].items() if m["path"] == "modules/identity.bicep"}
    assert set(identities) == {f"{w}Identity" for w in WORKLOADS} | {"kedaIdentity"}
    names = [m["body"]["params"]["name"] for m in identities.values()]
    assert len(set(names)) == len(names)
    assert federations() == {**{f"{w}Identity": ("tributary", w) for w in WORKLOADS}, "kedaIdentity": ("kube-system", "keda-operator")}
    accounts = {d["metadata"]["name"]: d for d in base_docs("namespace.yaml") if d["kind"] == "ServiceAccount"}
    assert set(accounts) == set(WORKLOADS)
    for w in WORKLOADS:
        dep = next(d for d in base_docs(f"{w}.yaml") if d["kind"] == "Deployment")
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == w, f"{w} runs as its own service account"
        assert accounts[w]["metadata"]["namespace"] == "tributary"
        assert output_expr(main, f"{w}ClientId") == f"{w}Identity.outputs.clientId"
    assert output_expr(main, "kedaClientId") == "kedaIdentity.outputs.clientId"
    assert not [o for o in main["outputs"] if o == "workloadClientId"], "no shared identity any more"


def principal_uses():
    """identity module symbol -> {(module, parameter)} wherever main.bicep passes its principal id."""
    main = parse(BICEP / "main.bicep")
    uses = {}

    def walk(node, mod, param):
        if isinstance(node, dict):
            for v in node.values():
                walk(v, mod, param)
        elif isinstance(node, list):
            for v in node:
                walk(v, mod, param)
        elif isinstance(node, str):
            for symbol in re.findall(r"(\w+)\.outputs\.principalId", node):
                uses.setdefault(symbol, set()).add((mod, param))

    for mod, m in main["modules"].items():
        for param, v in m["body"].get("params", {}).items():
            walk(v, mod, param)
    return uses


def test_identities_get_only_the_roles_their_workload_uses():
    """Where each identity's principal id goes: every one may read some Key Vault secrets; archive also writes
    Cosmos DB, the dashboard only reads it; nothing else (no Event Hubs role: everyone logs in with the
    send-and-listen rule's connection string)."""
    expected = {f"{w}Identity": {("secrets", "readers")} for w in WORKLOADS} | {"kedaIdentity": {("secrets", "readers")}}
    expected["archiveIdentity"].add(("cosmos", "writerPrincipalId"))
    expected["analyzeIdentity"].add(("secrets", "splunkReaders"))
    expected["dashboardIdentity"].add(("dashboardApp", "identityPrincipalId"))  # AcrPull, to run the image on App Service
    expected["dashboardIdentity"].add(("cosmos", "readerPrincipalId"))
    expected["lakeIdentity"].add(("lake", "writerPrincipalId"))
    assert principal_uses() == expected
    cosmos = module("cosmos")
    roles = {r["body"]["properties"]["roleDefinitionId"].strip("'").rsplit("/", 1)[-1]: r["body"]["properties"]["principalId"]
             for r in cosmos["resources"] if r["type"].startswith("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@")}
    assert roles == {COSMOS_CONTRIBUTOR: "writerPrincipalId", COSMOS_READER: "readerPrincipalId"}, \
        "the dashboard (reader) gets Data Reader, not Data Contributor"
    assert not [r for r in module("eventhubs")["resources"] if r["type"].startswith("Microsoft.Authorization/roleAssignments@")]
    assert not [r for r in module("keyvault")["resources"] if r["type"].startswith("Microsoft.Authorization/roleAssignments@")], \
        "no role on the vault: reads are granted per secret"


def spc_objects(name):
    spc = next(d for d in base_docs("secrets.yaml") if d["metadata"]["name"] == name)
    return {yaml.safe_load(o)["objectName"] for o in yaml.safe_load(spc["spec"]["parameters"]["objects"])["array"]}


def test_key_vault_reads_are_granted_per_secret_and_match_the_secret_provider_classes():
    """Each identity may read exactly the Key Vault secrets its workload's SecretProviderClass syncs (KEDA's: what
    its TriggerAuthentication reads), by a Key Vault Secrets User assignment on each secret, never on the vault."""
    main = parse(BICEP / "main.bicep")
    grants = {}
    for g in main["modules"]["secrets"]["body"]["params"]["readers"]:
        symbol = re.fullmatch(r"(\w+)\.outputs\.principalId", g["principalId"]).group(1)
        assert g["secret"] not in grants.get(symbol, set()), f"{symbol} granted {g['secret']} twice"
        grants.setdefault(symbol, set()).add(g["secret"])
    for w in WORKLOADS:
        assert grants.get(f"{w}Identity", set()) == spc_objects(f"{w}-secrets"), w
    ta = next(d for d in base_docs("auth.yaml") if d["kind"] == "TriggerAuthentication")
    assert grants["kedaIdentity"] == {s["name"] for s in ta["spec"]["azureKeyVault"]["secrets"]}
    assert set(grants) == {f"{w}Identity" for w in WORKLOADS} | {"kedaIdentity"}
    assert grants["dashboardIdentity"] == {"database-url-readonly", "redis-url", "operator-token", "viewer-token"}
    assert grants["ingestIdentity"] == {"fleet-key", "eventhubs-connection-string"}, "ingest needs no database, cache or Cosmos DB"
    secrets = module("secrets")
    written = {r["body"]["name"] for r in secrets["resources"] if r["type"].startswith("Microsoft.KeyVault/vaults/secrets@") and r["body"].get("properties")}
    assert set().union(*grants.values()) <= written
    assignments = [r for r in secrets["resources"] if r["type"].startswith("Microsoft.Authorization/roleAssignments@")]
    assert len(assignments) == 1
    body = assignments[0]["body"]
    scope = re.fullmatch(r"(\w+)\[i\]", body["scope"]).group(1)
    scoped = next(r for r in secrets["resources"] if r["symbol"] == scope)
    assert scoped["type"].startswith("Microsoft.KeyVault/vaults/secrets@"), "scoped to a secret, not the vault"
    assert scoped["body"]["name"] == "g.secret" and body["properties"]["principalId"] == "g.principalId"
    assert secrets["variables"]["secretsUser"] == SECRETS_USER and "'Microsoft.Authorization/roleDefinitions', secretsUser" in body["properties"]["roleDefinitionId"]
    assert sorted(body["dependsOn"]) == sorted(r["symbol"] for r in secrets["resources"]
                                                if r["type"].startswith("Microsoft.KeyVault/vaults/secrets@") and r["body"].get("properties")), \
        "the secrets exist before roles are assigned on them"
    # Anywhere: Key Vault Secrets User is only ever assigned on a secret.
    for f in BICEP.rglob("*.bicep"):
        parsed = parse(f)
        ids = {n for n, v in parsed["variables"].items() if v == SECRETS_USER} | {f"'{SECRETS_USER}'"}
        types = {r["symbol"]: r["type"].split("@")[0] for r in parsed["resources"]}
        for r in parsed["resources"]:
            role = r["body"].get("properties", {}).get("roleDefinitionId", "") if r["type"].startswith("Microsoft.Authorization/roleAssignments@") else ""
            if any(f", {i})" in role for i in ids):
                target = types.get(re.sub(r"\[i\]$", "", r["body"]["scope"]))
                assert target == "Microsoft.KeyVault/vaults/secrets", f"{f.name}: Key Vault Secrets User on {target or r['body']['scope']}"


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
    # Analyze's state topic: compacted, a partition per telemetry.raw partition.
    state = [
        r["body"]
        for r in eh["resources"]
        if r["type"].startswith("Microsoft.EventHub/namespaces/eventhubs@")
        and isinstance(r["body"], dict)
        and r["body"].get("name") == "tributary-analyze.state"
    ]
    assert len(state) == 1, "one compacted state hub"
    assert state[0]["properties"]["partitionCount"] == "partitions"
    assert state[0]["properties"]["retentionDescription"]["cleanupPolicy"] == "Compact"
    # The registry and the rules: compacted, one partition, read whole by
    # every ingest (registry) and analyze (both) replica.
    for name in ("tributary.devices", "tributary.rules"):
        hub = [
            r["body"]
            for r in eh["resources"]
            if r["type"].startswith("Microsoft.EventHub/namespaces/eventhubs@")
            and isinstance(r["body"], dict)
            and r["body"].get("name") == name
        ]
        assert len(hub) == 1, name
        assert hub[0]["properties"]["partitionCount"] == 1, name
        assert hub[0]["properties"]["retentionDescription"]["cleanupPolicy"] == "Compact", name


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
    policy = (BICEP / "policies" / "ingest-api.xml").read_text()
    assert resource(apim, "Microsoft.ApiManagement/service/apis/policies")["properties"]["value"] == "loadTextContent('../policies/ingest-api.xml')"
    assert "rate-limit-by-key" in policy and "quota-by-key" in policy  # the order and keys: test_apim_policy.py
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


def deploy_secret_params(arrays=("SECRET_PARAMS", "OPTIONAL_SECRET_PARAMS")):
    """Bicep parameter -> environment variable, the secure parameters infra/deploy.sh passes from the pipeline's
    secrets (always, and when the feature reading them is on)."""
    script = (ROOT / "infra" / "deploy.sh").read_text()
    return {p.split("=")[0]: p.split("=")[1] for a in arrays for p in re.search(rf"^{a}=\(([^)]*)\)", script, re.M).group(1).split()}


def deploy_generated_params():
    """The parameters infra/deploy.sh writes into parameter files of its own making (the interceptor's CA)."""
    script = (ROOT / "infra" / "deploy.sh").read_text()
    return re.findall(r'"parameters": \{"(\w+)": \{"value"', script)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_parameter_files_name_only_declared_parameters(env):
    doc = json.loads((BICEP / "params" / f"{env}.parameters.json").read_text())
    declared = parse(BICEP / "main.bicep")["params"]
    assert set(doc["parameters"]) <= set(declared), set(doc["parameters"]) - set(declared)
    passed = set(deploy_secret_params()) | set(deploy_generated_params())
    assert not passed & set(doc["parameters"]), "a secret is in a file in the repository or passed twice"
    required = {n for n, src in declared.items() if "=" not in src}
    assert not required & set(deploy_secret_params(["OPTIONAL_SECRET_PARAMS"])), "an optional secret has a default"
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


def subnet_by_output(output):
    """The subnet (name, properties) a network.bicep output names."""
    net = module("network")
    name = re.search(r"'Microsoft.Network/virtualNetworks/subnets', vnet.name, '([\w-]+)'", output_expr(net, output)).group(1)
    vnet = resource(net, "Microsoft.Network/virtualNetworks")
    return name, next(s["properties"] for s in vnet["properties"]["subnets"] if s["name"] == name)


def address_plan():
    main = parse(BICEP / "main.bicep")
    plan = main["variables"]["addressPlan"]
    passed = main["modules"]["network"]["body"]["params"]
    assert passed["addressPrefix"] == "addressPlan.vnet"
    assert passed["subnetPrefixes"] == {k: f"addressPlan.{k}" for k in plan if k != "vnet"}
    return plan


def test_one_virtual_network_without_overlaps():
    plan = address_plan()
    vnet = ipaddress.ip_network(plan["vnet"])
    subnets = [ipaddress.ip_network(v) for k, v in plan.items() if k != "vnet"]
    for i, a in enumerate(subnets):
        assert a.subnet_of(vnet)
        assert not any(a.overlaps(b) for b in subnets[i + 1:]), f"{a} overlaps another subnet"
    net = module("network")
    prefixes = {s["name"]: s["properties"]["addressPrefix"] for s in resource(net, "Microsoft.Network/virtualNetworks")["properties"]["subnets"]}
    assert sorted(prefixes.values()) == sorted(f"subnetPrefixes.{k}" for k in plan if k != "vnet")
    # AKS: nodes in the node subnet, its service range outside the network.
    aks = resource(module("aks"), "Microsoft.ContainerService/managedClusters")["properties"]
    assert aks["agentPoolProfiles"][0]["vnetSubnetID"] == "nodeSubnetId"
    assert parse(BICEP / "main.bicep")["modules"]["aks"]["body"]["params"]["nodeSubnetId"] == "network.outputs.nodesSubnetId"
    assert subnet_by_output("nodesSubnetId")[1]["addressPrefix"] == "subnetPrefixes.nodes"
    assert not ipaddress.ip_network(aks["networkProfile"]["serviceCidr"]).overlaps(vnet)
    assert ipaddress.ip_address(aks["networkProfile"]["dnsServiceIP"]) in ipaddress.ip_network(aks["networkProfile"]["serviceCidr"])
    # The cluster's identity may use the node and load balancer subnets, and nothing wider.
    aks_mod = module("aks")
    assert aks_mod["variables"]["networkContributor"] == "4d97b98b-1d4f-4787-a291-c67834d212e7"
    scopes = {r["body"]["scope"] for r in aks_mod["resources"] if r["type"].startswith("Microsoft.Authorization/roleAssignments@")
              and "networkContributor" in r["body"]["properties"]["roleDefinitionId"]}
    assert scopes == {"nodeSubnet", "interceptorSubnet"}
    assert {r["type"].split("@")[0] for r in aks_mod["resources"] if r["symbol"] in scopes} == {"Microsoft.Network/virtualNetworks/subnets"}


def test_postgres_is_reachable_only_from_the_virtual_network():
    """Private access: a subnet delegated to PostgreSQL, a private DNS zone linked to the network, no public
    endpoint, and no firewall rule (in particular not 0.0.0.0, which admits every Azure tenant's address)."""
    pg = module("postgres")
    assert not [r for r in pg["resources"] if "firewallRules" in r["type"]], "no firewall rules: private access only"
    for f in BICEP.rglob("*.bicep"):
        assert not re.search(r"(?<![\d.])0\.0\.0\.0(?![\d/])", f.read_text()), f"{f.name}: an allow-all-Azure rule"
    server = resource(pg, "Microsoft.DBforPostgreSQL/flexibleServers")
    net = server["properties"]["network"]
    assert net["publicNetworkAccess"] == "Disabled"
    assert net["delegatedSubnetResourceId"] == "delegatedSubnetId"
    assert net["privateDnsZoneArmResourceId"] == "zone.id"
    zone = next(r for r in pg["resources"] if r["symbol"] == "zone")
    assert zone["type"].startswith("Microsoft.Network/privateDnsZones@")
    assert zone["body"]["name"].endswith(".postgres.database.azure.com'"), "a PostgreSQL private zone name"
    link = resource(pg, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")
    assert link["parent"] == "zone" and link["properties"]["virtualNetwork"]["id"] == "vnetId"
    assert "zoneLink" in server["dependsOn"], "the zone is linked before the server registers in it"
    passed = parse(BICEP / "main.bicep")["modules"]["postgres"]["body"]["params"]
    assert (passed["delegatedSubnetId"], passed["vnetId"]) == ("network.outputs.postgresSubnetId", "network.outputs.id")
    _, subnet = subnet_by_output("postgresSubnetId")
    assert [d["properties"]["serviceName"] for d in subnet["delegations"]] == ["Microsoft.DBforPostgreSQL/flexibleServers"]
    assert output_expr(module("network"), "id") == "vnet.id"


def test_every_extension_the_migrations_create_is_allowed_on_azure():
    """Azure Database for PostgreSQL lets a database create only the extensions its server parameter
    azure.extensions lists: each `CREATE EXTENSION` of shared/migrations is in it."""
    created = {m.lower() for f in (ROOT / "shared" / "migrations").glob("*.sql")
               for m in re.findall(r"CREATE EXTENSION IF NOT EXISTS (\w+)", f.read_text(), re.I)}
    assert "pg_trgm" in created
    config = next(r["body"] for r in module("postgres")["resources"]
                  if r["type"].startswith("Microsoft.DBforPostgreSQL/flexibleServers/configurations@") and r["body"]["name"] == "azure.extensions")
    assert {e.strip().lower() for e in config["properties"]["value"].split(",")} >= created
    assert config["dependsOn"] == ["requireTls"], "one server configuration at a time"


def test_redis_is_reachable_only_through_its_private_endpoint():
    redis = module("redis")
    cache = resource(redis, "Microsoft.Cache/redis")["properties"]
    assert cache["publicNetworkAccess"] == "Disabled" and cache["enableNonSslPort"] is False
    assert not [r for r in redis["resources"] if "firewallRules" in r["type"]]
    pe = resource(redis, "Microsoft.Network/privateEndpoints")["properties"]
    assert pe["subnet"]["id"] == "endpointSubnetId"
    conn = pe["privateLinkServiceConnections"][0]["properties"]
    assert (conn["privateLinkServiceId"], conn["groupIds"]) == ("cache.id", ["redisCache"])
    zone = next(r for r in redis["resources"] if r["symbol"] == "zone")
    assert zone["body"]["name"] == "privatelink.redis.cache.windows.net"
    assert resource(redis, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")["properties"]["virtualNetwork"]["id"] == "vnetId"
    group = resource(redis, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups")
    assert group["parent"] == "endpoint" and group["properties"]["privateDnsZoneConfigs"][0]["properties"]["privateDnsZoneId"] == "zone.id"
    passed = parse(BICEP / "main.bicep")["modules"]["redis"]["body"]["params"]
    assert (passed["endpointSubnetId"], passed["vnetId"]) == ("network.outputs.endpointsSubnetId", "network.outputs.id")
    cosmos = resource(module("cosmos"), "Microsoft.DocumentDB/databaseAccounts")["properties"]
    assert cosmos["disableLocalAuth"] is True, "Cosmos DB stays public: Entra ID tokens only"


def test_api_management_forwards_ingest_to_the_interceptors_internal_load_balancer():
    """API Management is injected into the network (External: public gateway) and forwards ingest to the fixed
    private address of the internal load balancer in front of the KEDA HTTP add-on interceptor
    (keda/base/interceptor.yaml), with the Host the interceptor routes ingest by. No placeholder to fill in."""
    main = parse(BICEP / "main.bicep")
    text = (BICEP / "main.bicep").read_text()
    assert "ingestBackendUrl" not in main["params"], "the backend comes from the address plan, not a parameter to fill in"
    for f in [*BICEP.rglob("*.json"), *BICEP.rglob("*.bicep")]:
        assert "INTERCEPTOR-LOAD-BALANCER-ADDRESS" not in f.read_text(), f.name
    ip, port, plan = main["variables"]["ingestBackendIp"], main["variables"]["interceptorPort"], address_plan()
    passed = main["modules"]["apim"]["body"]["params"]
    assert passed["ingestBackendUrl"] == "'https://${ingestBackendIp}:${interceptorPort}'"
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(plan["interceptor"])
    assert output_expr(main, "ingestBackendIp") == "ingestBackendIp" and output_expr(main, "apimSubnetPrefix") == "addressPlan.apim"

    # The load balancer: internal, at that address, in the interceptor subnet, from API Management only.
    svc = next(d for d in base_docs("interceptor.yaml") if d["kind"] == "Service")
    ann = svc["metadata"]["annotations"]
    assert ann["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"
    assert ann["service.beta.kubernetes.io/azure-load-balancer-ipv4"] == ip, "the address Bicep gives API Management"
    subnet, props = subnet_by_output("interceptorSubnetId")
    assert ann["service.beta.kubernetes.io/azure-load-balancer-internal-subnet"] == subnet and props["addressPrefix"] == "subnetPrefixes.interceptor"
    assert main["modules"]["aks"]["body"]["params"]["interceptorSubnetId"] == "network.outputs.interceptorSubnetId"
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["ports"][0]["port"] == port
    assert svc["spec"]["loadBalancerSourceRanges"] == [plan["apim"]]
    assert svc["metadata"]["namespace"] == "keda" and svc["spec"]["selector"]["app.kubernetes.io/component"] == "interceptor"

    # API Management in the network: its subnet, the rules it requires, a tier that can be injected.
    apim = module("apim")
    service = resource(apim, "Microsoft.ApiManagement/service")["properties"]
    assert service["virtualNetworkType"] == "External"
    assert service["virtualNetworkConfiguration"] == {"subnetResourceId": "subnetId"}
    assert passed["subnetId"] == "network.outputs.apimSubnetId"
    _, apim_subnet = subnet_by_output("apimSubnetId")
    assert apim_subnet["addressPrefix"] == "subnetPrefixes.apim" and apim_subnet["networkSecurityGroup"] == {"id": "apimNsg.id"}
    rules = [r["properties"] for r in resource(module("network"), "Microsoft.Network/networkSecurityGroups")["properties"]["securityRules"]]
    inbound = {(r["sourceAddressPrefix"], r["destinationPortRange"]) for r in rules if r["direction"] == "Inbound" and r["access"] == "Allow"}
    assert {("ApiManagement", "3443"), ("AzureLoadBalancer", "6390")} <= inbound
    for path in (BICEP / "main.bicep", BICEP / "modules" / "apim.bicep"):
        sku = "apimSku" if path.name == "main.bicep" else "sku"
        assert "@allowed(['Developer', 'Premium'])" in decorated(path)[sku], f"{path.name}: only tiers that can be injected"
    for env in ("dev", "prod"):
        assert json.loads((BICEP / "params" / f"{env}.parameters.json").read_text())["parameters"]["apimSku"]["value"] in ("Developer", "Premium")

    # What API Management sends and where: never a cluster-internal name, the Host the interceptor routes.
    for f in BICEP.rglob("*.bicep"):
        assert ".svc.cluster.local" not in re.sub(r"@description\('(?:[^'\\]|\\.)*'\)", "", f.read_text()), \
            f"{f.name}: API Management cannot resolve cluster-internal names"
    assert resource(apim, "Microsoft.ApiManagement/service/apis")["properties"]["serviceUrl"] == "ingestBackendUrl"
    policy = (BICEP / "policies" / "ingest-api.xml").read_text()
    assert '<set-header name="Host" exists-action="override"><value>{{ingest-host}}</value></set-header>' in policy
    assert module("apim")["variables"]["namedValues"]["ingest-host"] == "ingestHost"
    hso = next(d for d in base_docs("ingest.yaml") if d["kind"] == "HTTPScaledObject")
    host = re.search(r"var ingestHost = '([^']*)'", text).group(1)
    assert host.replace("${namespace}", main["variables"]["namespace"]) in hso["spec"]["hosts"], "the interceptor routes the Host API Management sends"
    assert passed["ingestHost"] == "ingestHost"


def test_api_management_reaches_the_interceptor_over_https_and_checks_its_certificate():
    """The hop from API Management to the interceptor is HTTPS: the load balancer exposes only the interceptor's
    TLS port, API Management sends every request to a backend entity that checks the certificate's chain
    (against the environment's CA, in the service's CA store) and name, and infra/deploy.sh passes that CA from
    what infra/interceptor_tls.sh keeps and gives the chart's TLS proxy the certificate."""
    main = parse(BICEP / "main.bicep")
    port = main["variables"]["interceptorPort"]
    assert port == 8443
    svc = next(d for d in base_docs("interceptor.yaml") if d["kind"] == "Service")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(8443, 8443)], "no plain HTTP port"
    apim = module("apim")
    passed = main["modules"]["apim"]["body"]["params"]
    assert passed["ingestBackendUrl"].startswith("'https://")
    assert passed["interceptorCaCertificates"] == "interceptorCaCertificates"
    assert "interceptorCaCertificates" in deploy_generated_params()
    service = resource(apim, "Microsoft.ApiManagement/service")["properties"]
    # One CA store entry per certificate passed (a `for` over the parameter; the parser keeps its body).
    assert service["certificates"] == {"encodedCertificate": "c", "storeName": "Root"}
    assert "[for c in interceptorCaCertificates:" in (BICEP / "modules" / "apim.bicep").read_text()
    backend = resource(apim, "Microsoft.ApiManagement/service/backends")
    assert backend["name"] == "interceptor"
    props = backend["properties"]
    assert props["url"] == "ingestBackendUrl" and props["protocol"] == "http"
    assert props["tls"] == {"validateCertificateChain": True, "validateCertificateName": True}
    policy = (BICEP / "policies" / "ingest-api.xml").read_text()
    assert '<set-backend-service backend-id="interceptor" />' in policy
    script = (ROOT / "infra" / "deploy.sh").read_text()
    # The certificate names the address Bicep forwards to (its output); what deploy.sh does with it: test_kustomize.py.
    assert 'infra/interceptor_tls.sh cert "$tls_dir" "$(get ingestBackendIp)"' in script


def test_every_parameter_is_described():
    for f in BICEP.rglob("*.bicep"):
        for name, decorators in decorated(f).items():
            assert "@description(" in decorators, f"{f.relative_to(BICEP)}: parameter {name} has no @description"


def component_patch(name, kind, target):
    """The patch of keda/components/<name> aimed at `kind` `target` (its JSON 6902 list or its merge patch)."""
    comp = yaml.safe_load((ROOT / "keda" / "components" / name / "kustomization.yaml").read_text())
    assert comp["kind"] == "Component"
    for p in comp["patches"]:
        if p.get("target") == {"kind": kind, "name": target}:
            return yaml.safe_load(p["patch"])
        doc = yaml.safe_load(p["patch"])
        if isinstance(doc, dict) and doc.get("kind") == kind and doc["metadata"]["name"] == target:
            return doc
    raise AssertionError(f"keda/components/{name} does not patch {kind} {target}")


def test_splunk_is_optional_and_its_token_is_a_key_vault_secret_only_analyze_reads():
    """Splunk forwarding (issue 21, item 3) is off unless splunkUrl is given; then Key Vault holds the HEC token,
    only analyze's identity may read it, and the manifests' Splunk component syncs exactly that secret into
    analyze's Secret."""
    main = parse(BICEP / "main.bicep")
    for name in ("splunkUrl", "splunkChannel", "splunkHecToken"):
        assert main["params"][name].rstrip().endswith("= ''"), f"{name} is optional (empty by default)"
    assert "splunkHecToken" in secure_params(BICEP / "main.bicep")
    assert main["variables"]["splunkEnabled"] == "!empty(splunkUrl)"
    params = main["modules"]["secrets"]["body"]["params"]
    assert params["splunkHecToken"] == "splunkHecToken"
    assert params["splunkReaders"] == "splunkEnabled ? [analyzeIdentity.outputs.principalId] : []", "analyze alone, and only when on"
    assert output_expr(main, "splunkUrl") == "splunkUrl" and output_expr(main, "splunkChannel") == "splunkChannel"

    secrets = module("secrets")
    assert "splunkHecToken" in secure_params(BICEP / "modules" / "secrets.bicep")
    token = next(r for r in secrets["resources"] if r["type"].startswith("Microsoft.KeyVault/vaults/secrets@") and r["body"]["name"] == "splunk-hec-token")
    assert token["condition"] == "(!empty(splunkReaders))", "written only when someone reads it"
    assert token["body"]["properties"]["value"] == "splunkHecToken"
    assert all(r["condition"] is None for r in secrets["resources"] if r is not token), "every other secret is always written"
    # The role assignments cover the Splunk readers with the rest: one loop over readers + splunkReaders.
    assert secrets["variables"]["grants"] == "concat(readers, map(splunkReaders, p => { secret: 'splunk-hec-token', principalId: p }))"
    loops = [r for r in secrets["resources"] if r["type"].startswith(("Microsoft.Authorization/roleAssignments@", "Microsoft.KeyVault/vaults/secrets@"))
             and r["condition"] is None and r["body"].get("name") in ("g.secret", "guid(vault.id, g.secret, g.principalId, secretsUser)")]
    assert len(loops) == 2
    text = (BICEP / "modules" / "secrets.bicep").read_text()
    assert "[for g in grants:" in text and "[for (g, i) in grants:" in text and "in readers:" not in text

    # What the component syncs is what analyze may read: its base objects plus the token, under the key its env reads.
    spc = component_patch("splunk", "SecretProviderClass", "analyze-secrets")
    objects = next(op for op in spc if op["path"] == "/spec/parameters/objects")["value"]
    names = {yaml.safe_load(o)["objectName"] for o in yaml.safe_load(objects)["array"]}
    assert names == spc_objects("analyze-secrets") | {"splunk-hec-token"}
    assert next(op for op in spc if op["path"] == "/spec/secretObjects/0/data/-")["value"] == {"objectName": "splunk-hec-token", "key": "splunk-hec-token"}
    dep = component_patch("splunk", "Deployment", "analyze")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_SPLUNK_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "analyze-secrets", "key": "splunk-hec-token"}
    assert env["TRIBUTARY_SPLUNK_URL"]["value"].startswith("https://")


def test_the_dashboard_web_app_requires_sign_in_and_reads_only_its_own_secrets():
    """Issue 21, item 1: the dashboard on App Service, deployed only with an app registration to sign in with,
    App Service authentication in front of every path but the probes, virtual network integration for the private
    PostgreSQL and Redis, its own identity for the image, Key Vault references and Cosmos DB."""
    from test_manifests import source_env
    main = parse(BICEP / "main.bicep")
    app = main["modules"]["dashboardApp"]
    assert app["path"] == "modules/appservice.bicep"
    assert app["condition"] == "(!empty(dashboardEntraClientId))", "no public web app without sign-in"
    assert main["params"]["dashboardEntraClientId"].rstrip().endswith("= ''")
    p = app["body"]["params"]
    assert p["subnetId"] == "network.outputs.appServiceSubnetId"
    assert (p["identityId"], p["identityClientId"], p["identityPrincipalId"]) == (
        "dashboardIdentity.outputs.id", "dashboardIdentity.outputs.clientId", "dashboardIdentity.outputs.principalId")
    assert p["imageTag"] == "imageTag" and "imageTag=\"$tag\"" in (ROOT / "infra" / "deploy.sh").read_text()
    _, subnet = subnet_by_output("appServiceSubnetId")
    assert [d["properties"]["serviceName"] for d in subnet["delegations"]] == ["Microsoft.Web/serverFarms"]

    mod = module("appservice")
    site = resource(mod, "Microsoft.Web/sites")
    props = site["properties"]
    assert site["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"${identityId}": {}}}
    assert props["httpsOnly"] is True and props["vnetRouteAllEnabled"] is True and props["virtualNetworkSubnetId"] == "subnetId"
    assert props["keyVaultReferenceIdentity"] == "identityId"
    cfg = props["siteConfig"]
    assert cfg["acrUseManagedIdentityCreds"] is True and cfg["acrUserManagedIdentityID"] == "identityClientId"
    assert cfg["linuxFxVersion"] == "'DOCKER|${acrLoginServer}/tributary-dashboard:${imageTag}'"
    assert cfg["ftpsState"] == "Disabled" and cfg["minTlsVersion"] == "1.2"
    settings = {s["name"]: s["value"] for s in cfg["appSettings"]}
    assert settings["TRIBUTARY_AUTH"] == "app-service" and settings["TRIBUTARY_OPERATOR_ROLE"] == "operatorRole"
    assert settings["TRIBUTARY_VIEWER_ROLE"] == "viewerRole", "reading needs an app role, not just a tenant account"
    assert "TRIBUTARY_OPERATOR_TOKEN" not in settings, "operators are an app role here, not a shared token"
    assert int(settings["TRIBUTARY_SSE_KEEPALIVE_SECS"]) < 230, "under App Service's idle timeout"
    assert settings["PORT"] == settings["WEBSITES_PORT"] == "8081"
    # Every setting is one the dashboard reads (or App Service's / the Azure SDK's own).
    known = source_env("dashboard")
    assert set(settings) - {"WEBSITES_PORT", "AZURE_CLIENT_ID"} <= set(known), set(settings) - set(known)
    # Secrets by Key Vault reference only, and only ones the dashboard's identity may read.
    refs = {n: re.fullmatch(r"secretRef\(keyVaultName, '([\w-]+)'\)", v) for n, v in settings.items() if isinstance(v, str)}
    secret_settings = {n for n, secret in known.items() if secret}
    for name in set(settings) & secret_settings:
        assert refs.get(name), f"{name} must be a Key Vault reference"
    read = {m.group(1) for m in refs.values() if m}
    assert read == {"database-url-readonly", "redis-url"}
    grants = {g["secret"] for g in main["modules"]["secrets"]["body"]["params"]["readers"] if g["principalId"] == "dashboardIdentity.outputs.principalId"}
    assert read <= grants
    assert "@Microsoft.KeyVault(VaultName=${vault};SecretName=${secret})" in (BICEP / "modules" / "appservice.bicep").read_text()
    # App Service authentication: sign-in required everywhere but the probes, Entra ID with the registration.
    auth = next(r for r in mod["resources"] if r["type"].startswith("Microsoft.Web/sites/config@"))["body"]
    assert auth["name"] == "authsettingsV2"
    gv = auth["properties"]["globalValidation"]
    assert gv["requireAuthentication"] is True and gv["unauthenticatedClientAction"] == "RedirectToLoginPage"
    assert gv["excludedPaths"] == ["/healthz", "/readyz"]
    aad = auth["properties"]["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True and aad["registration"]["clientId"] == "entraClientId"
    # The identity may pull from the registry: AcrPull, on the registry alone.
    pull = next(r for r in mod["resources"] if r["type"].startswith("Microsoft.Authorization/roleAssignments@"))["body"]
    assert pull["scope"] == "registry" and mod["variables"]["acrPull"] == "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    # The value the dashboard's config accepts for TRIBUTARY_AUTH.
    src = (ROOT / "functions" / "dashboard" / "src" / "config.rs").read_text()
    assert "pub enum AuthKind" in src and "AppService," in src and "clap::ValueEnum" in src
