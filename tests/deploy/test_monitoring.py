"""Observability on Azure, checked offline (issue 21, item 4): what managed Prometheus scrapes, the alert rules,
the Grafana dashboard and the Bicep that deploys them.

The alert rules (infra/monitoring/alert-rules.json) and every dashboard query go through promtool (Debian's
prometheus package, 2.42): the real PromQL parser, and unit tests that feed each rule synthetic series and check it
fires on its fault and stays quiet otherwise. Metric names in rules and panels are checked against what the
functions register (Rust source) and what the scrape configuration keeps. What only a real cluster checks: that
the managed agent picks the pods up through Istio's merged metrics endpoint, the KEDA add-on's pod names and
metrics port, and that Azure accepts the rule group and imports the dashboard.
"""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from test_bicep import BICEP, module, parse, resource

ROOT = pathlib.Path(__file__).resolve().parents[2]
MONITORING = ROOT / "infra" / "monitoring"
RULES = MONITORING / "alert-rules.json"
DASHBOARD = MONITORING / "grafana" / "tributary.json"
FUNCTIONS = ["ingest", "archive", "analyze", "process", "dashboard", "lake"]
# Series from outside the functions, and where they come from.
EXTERNAL = {
    "keda_scaler_metrics_value": "keda-operator",  # the job in keda/base/monitoring.yaml
    "kube_deployment_status_replicas_available": "kubestate",  # kube-state-metrics, a default target
    "kube_deployment_status_replicas_unavailable": "kubestate",
}


def promtool():
    exe = shutil.which("promtool")
    if not exe:
        pytest.fail("promtool not found: scripts/test installs Debian's prometheus package", pytrace=False)
    return exe


def run_promtool(*args, cwd=None):
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd)


def base_docs(file):
    return [d for d in yaml.safe_load_all((ROOT / "keda" / "base" / file).read_text()) if d]


def registered_metrics():
    """Every metric name the Rust code registers, with the names its exposition adds (counters' _total,
    histograms' _bucket, _sum, _count)."""
    names = set()
    for f in list((ROOT / "functions").glob("*/src/**/*.rs")) + list((ROOT / "shared" / "src").glob("**/*.rs")):
        names |= set(re.findall(r'register\(\s*"(tributary_[a-z_]+)"', f.read_text()))
    assert {"tributary_ingest_requests", "tributary_process_window_visible_seconds"} <= names
    return {n + s for n in names for s in ("", "_total", "_bucket", "_sum", "_count")}


def metric_names(expr):
    return set(re.findall(r"\b((?:tributary|keda|kube)_[a-z_]+)\b", expr))


def dashboard_queries():
    d = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p["targets"]]


# --- alert rules ----------------------------------------------------------------------------------------------------


def test_alert_rules_parse_and_pass_their_unit_tests():
    r = run_promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_promtool("test", "rules", "alert-rules.test.yaml", cwd=MONITORING)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_rule_has_a_unit_test_that_makes_it_fire():
    rules = json.loads(RULES.read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((MONITORING / "alert-rules.test.yaml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]}
    names = {r["alert"] for r in rules}
    assert fired == names and quiet == names, "each rule is shown to fire and to stay quiet"


def test_the_rules_cover_what_operators_are_paged_for():
    rules = {r["alert"]: r for r in json.loads(RULES.read_text())["groups"][0]["rules"]}
    # The issue's list: lag growing, 5xx rate, dead letters, a function not ready.
    assert {"TributaryConsumerLagGrowing", "TributaryIngestServerErrors", "TributaryDeadLetters", "TributaryFunctionNotReady"} <= set(rules)
    known = registered_metrics() | set(EXTERNAL)
    for name, r in rules.items():
        assert r["labels"]["severity"] in ("critical", "warning"), name
        assert r["annotations"]["summary"] and r["annotations"]["runbook"], name
        assert re.fullmatch(r"\d+[smh]", r["for"]), f"{name}: Bicep turns `for` into PT<n><S|M|H>"
        used = metric_names(r["expr"])
        assert used and used <= known, f"{name}: {used - known} is not a series anything exports"


# --- the dashboard --------------------------------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "tributary-overview" and d["title"] == "Tributary" and isinstance(d["schemaVersion"], int)
    assert [v for v in d["templating"]["list"] if v["type"] == "datasource" and v["query"] == "prometheus" and v["name"] == "datasource"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["datasource"]["uid"] == "${datasource}" and p["description"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_dashboard_shows_what_the_issue_lists():
    titles = " | ".join(t for t, _ in dashboard_queries()).lower()
    exprs = " ".join(e for _, e in dashboard_queries())
    for what in ("readings", "answers", "answer time", "lag", "window end to dashboard", "dead letters", "alert records"):
        assert what in titles, what
    assert 'status="429"' in exprs and 'status=~"5.."' in exprs and 'status=~"4..",status!="429"' in exprs
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(tributary_ingest_request_duration_seconds_bucket" in exprs


def test_every_dashboard_query_parses_and_reads_an_exported_series(tmp_path):
    known = registered_metrics() | set(EXTERNAL)
    rules = []
    for i, (title, e) in enumerate(dashboard_queries()):
        used = metric_names(e)
        assert used and used <= known, f"{title}: {used - known} is not a series anything exports"
        # Grafana's $__rate_interval is not PromQL: what it stands for is a range.
        rules.append({"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m")})
    f = tmp_path / "queries.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run_promtool("check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr


# --- what is scraped ------------------------------------------------------------------------------------------------


def test_every_function_is_scraped_on_its_own_port():
    src = (ROOT / "shared" / "src" / "service" / "ops.rs").read_text()
    assert '.route("/metrics", get(metrics))' in src, "the ops router serves /metrics on the function's port"
    for fn in FUNCTIONS:
        dep = next(d for d in base_docs(f"{fn}.yaml") if d["kind"] == "Deployment")
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        port = dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}, fn


def agent_config(name):
    cm = next(d for d in base_docs("monitoring.yaml") if d["metadata"]["name"] == name)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == "kube-system", "the agent reads its settings there"
    return cm["data"]


def test_the_agent_scrapes_annotated_pods_in_the_namespace_and_kube_state_metrics():
    data = agent_config("ama-metrics-settings-configmap")
    assert data["schema-version"] == "v1" and data["config-version"]
    regex = re.fullmatch(r'podannotationnamespaceregex = "(.*)"', data["pod-annotation-based-scraping"].strip()).group(1)
    assert re.fullmatch(regex, "tributary") and not re.fullmatch(regex, "kube-system") and not re.fullmatch(regex, "tributary-old")
    defaults = dict(l.replace(" ", "").split("=") for l in data["default-scrape-settings-enabled"].splitlines())
    assert defaults["kubestate"] == "true", "kube_deployment_* for a function not ready"


def test_keda_job_is_a_valid_prometheus_config_that_keeps_only_the_operator(tmp_path):
    text = agent_config("ama-metrics-prometheus-config")["prometheus-config"]
    config = yaml.safe_load(text)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "keda-operator")
    sd = job["kubernetes_sd_configs"]
    assert sd == [{"role": "pod", "namespaces": {"names": ["kube-system"]}}], "the KEDA add-on's pods, in kube-system"
    # Debian's promtool is built without Kubernetes discovery: the rest (relabelling: regexes, actions, targets)
    # is checked by it with the discovery swapped for a static target.
    checked = {**config, "scrape_configs": [{**{k: v for k, v in j.items() if k != "kubernetes_sd_configs"},
                                             "static_configs": [{"targets": ["10.0.0.1:8080"]}]} for j in config["scrape_configs"]]}
    f = tmp_path / "prometheus.yml"
    f.write_text(yaml.safe_dump(checked))
    r = run_promtool("check", "config", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    keep = next(rc for rc in job["relabel_configs"] if rc["source_labels"] == ["__meta_kubernetes_pod_name"])
    assert keep["action"] == "keep"
    pods = {"keda-operator-7d9f8b6c5-x2x7q": True, "keda-operator-metrics-apiserver-6c9f8d7b4-abcde": False,
            "keda-admission-webhooks-5f7d9c8b6-qwert": False, "coredns-6d8f7c9b5-zxcvb": False}
    for pod, kept in pods.items():
        assert bool(re.fullmatch(keep["regex"], pod)) == kept, pod  # Prometheus anchors relabel regexes
    kept_metrics = next(rc for rc in job["metric_relabel_configs"] if rc["source_labels"] == ["__name__"])["regex"]
    for name, source in EXTERNAL.items():
        if source == "keda-operator":
            assert re.fullmatch(kept_metrics, name), name


def test_local_overlay_has_no_azure_monitor_agent_config():
    text = (ROOT / "keda" / "overlays" / "local" / "kustomization.yaml").read_text()
    for name in ("ama-metrics-settings-configmap", "ama-metrics-prometheus-config"):
        assert f"metadata: {{name: {name}, namespace: kube-system}}" in text, f"{name} dropped locally"


# --- Bicep ----------------------------------------------------------------------------------------------------------


def test_aks_runs_the_managed_prometheus_agent():
    aks = resource(module("aks"), "Microsoft.ContainerService/managedClusters")["properties"]
    assert aks["azureMonitorProfile"]["metrics"]["enabled"] is True
    assert "kubeStateMetrics" in aks["azureMonitorProfile"]["metrics"]


def test_metrics_flow_from_the_cluster_to_the_workspace_grafana_reads():
    mon = module("monitoring")
    by_type = {r["type"].split("@")[0]: r for r in mon["resources"]}
    dcr = by_type["Microsoft.Insights/dataCollectionRules"]["body"]["properties"]
    assert dcr["dataSources"]["prometheusForwarder"][0]["streams"] == ["Microsoft-PrometheusMetrics"]
    dest = dcr["destinations"]["monitoringAccounts"][0]
    assert dest["accountResourceId"] == "workspace.id"
    assert dcr["dataFlows"] == [{"streams": ["Microsoft-PrometheusMetrics"], "destinations": [dest["name"]]}]
    assert dcr["dataCollectionEndpointId"] == "endpoint.id"
    assoc = [r["body"] for r in mon["resources"] if r["type"].startswith("Microsoft.Insights/dataCollectionRuleAssociations@")]
    assert {a["scope"] for a in assoc} == {"aks"}
    assert {"rule.id", "endpoint.id"} == {a["properties"].get("dataCollectionRuleId") or a["properties"].get("dataCollectionEndpointId") for a in assoc}
    grafana = by_type["Microsoft.Dashboard/grafana"]["body"]
    assert grafana["properties"]["grafanaIntegrations"]["azureMonitorWorkspaceIntegrations"] == [{"azureMonitorWorkspaceResourceId": "workspace.id"}]
    assert grafana["properties"]["apiKey"] == "Disabled", "sign-in with Entra ID only"
    roles = {r["symbol"]: r["body"] for r in mon["resources"] if r["type"].startswith("Microsoft.Authorization/roleAssignments@")}
    assert roles["grafanaReads"]["scope"] == "workspace" and roles["grafanaReads"]["properties"]["principalId"] == "grafana.identity.principalId"
    assert mon["variables"]["monitoringDataReader"] == "b0d8363b-8ddd-447d-831f-62ca05bff136"
    assert roles["admins"]["scope"] == "grafana" and mon["variables"]["grafanaAdmin"] == "22926164-76b3-42b3-bc55-97df8dab3e41"


def test_alert_rules_deployed_are_the_file_promtool_tested():
    mon = module("monitoring")
    assert mon["variables"]["rules"] == "loadJsonContent('../../monitoring/alert-rules.json').groups[0]"
    group = resource(mon, "Microsoft.AlertsManagement/prometheusRuleGroups")["properties"]
    assert group["scopes"] == "[workspace.id, aks.id]" or group["scopes"] == ["workspace.id", "aks.id"]
    rule = group["rules"]
    assert rule["alert"] == "r.alert" and rule["expression"] == "r.expr" and rule["for"] == "'PT${toUpper(r.for)}'"
    assert rule["actions"] == [{"actionGroupId": "oncall.id"}], "every rule notifies the on-call action group"
    assert rule["severity"] == "severities[r.labels.severity]"
    assert set(mon["variables"]["severities"]) == {r["labels"]["severity"] for r in json.loads(RULES.read_text())["groups"][0]["rules"]}
    assert group["interval"] == "'PT${toUpper(rules.interval)}'" and re.fullmatch(r"\d+m", json.loads(RULES.read_text())["groups"][0]["interval"])
    main = parse(BICEP / "main.bicep")
    passed = main["modules"]["monitoring"]["body"]["params"]
    assert passed["aksName"] == "aks.outputs.name"
    assert "deployerPrincipalId" in passed["grafanaAdmins"], "the deploy may import the dashboard"
