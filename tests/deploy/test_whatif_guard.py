"""infra/whatif_guard.py: what-if results (Azure's documented shape) that must stop a deploy and ones that must not."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUARD = ROOT / "infra" / "whatif_guard.py"
RG = "/subscriptions/s/resourceGroups/tributary-prod/providers"


def run(changes, tmp_path, allow=None, error=None):
    f = tmp_path / "what-if.json"
    f.write_text(json.dumps({"status": "Failed" if error else "Succeeded", "changes": changes, **({"error": error} if error else {})}))
    env = {"PATH": "/usr/bin:/bin", **({"TRIBUTARY_WHATIF_ALLOW": allow} if allow else {})}
    return subprocess.run([sys.executable, str(GUARD), str(f)], capture_output=True, text=True, env=env)


def modify(rid, delta):
    return {"resourceId": f"{RG}/{rid}", "changeType": "Modify", "delta": delta}


DESTROYING = {
    "a resource deleted": {"resourceId": f"{RG}/Microsoft.Cache/redis/tributary-prod-redis", "changeType": "Delete"},
    "a subnet dropped": modify("Microsoft.Network/virtualNetworks/v", [
        {"path": "properties.subnets", "propertyChangeType": "Array", "children": [{"path": "2", "propertyChangeType": "Delete"}]}]),
    "a node pool dropped": modify("Microsoft.ContainerService/managedClusters/c", [
        {"path": "properties.agentPoolProfiles", "propertyChangeType": "Array", "children": [{"path": "1", "propertyChangeType": "Delete"}]}]),
    "a database server taken off its network": modify("Microsoft.DBforPostgreSQL/flexibleServers/p", [
        {"path": "properties.network", "propertyChangeType": "Modify", "children": [{"path": "delegatedSubnetResourceId", "propertyChangeType": "Delete"}]}]),
    "the mesh turned off": modify("Microsoft.ContainerService/managedClusters/c", [{"path": "properties.serviceMeshProfile", "propertyChangeType": "Delete"}]),
}


@pytest.mark.parametrize("case", DESTROYING)
def test_destroying_changes_stop_the_deploy(case, tmp_path):
    r = run([DESTROYING[case]], tmp_path)
    assert r.returncode == 1, r.stdout
    assert "UNEXPECTED DELETE" in r.stderr and DESTROYING[case]["resourceId"] in r.stderr


def test_harmless_changes_pass_and_are_listed(tmp_path):
    changes = [
        {"resourceId": f"{RG}/Microsoft.Monitor/accounts/a", "changeType": "Create"},
        {"resourceId": f"{RG}/Microsoft.KeyVault/vaults/kv", "changeType": "NoChange"},
        # what-if reports defaulted or read-only properties as deleted: no part of the resource goes.
        modify("Microsoft.Cache/redis/r", [{"path": "properties.redisConfiguration.maxmemory-delta", "propertyChangeType": "Delete"}]),
        modify("Microsoft.ApiManagement/service/apim", [{"path": "properties.customProperties", "propertyChangeType": "Delete"}]),
        modify("Microsoft.Network/virtualNetworks/v", [
            {"path": "properties.subnets", "propertyChangeType": "Array", "children": [{"path": "0", "propertyChangeType": "Modify"}]}]),
    ]
    r = run(changes, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "maxmemory-delta: would be removed (allowed or harmless)" in r.stdout
    assert "what-if: 1 Create, 3 Modify, 1 NoChange" in r.stdout


def test_an_allowed_delete_passes_and_only_that_one(tmp_path):
    change = DESTROYING["a subnet dropped"]
    allow = r".*/virtualNetworks/v#properties\.subnets\.2"
    assert run([change], tmp_path, allow=allow).returncode == 0
    assert run([change, DESTROYING["a node pool dropped"]], tmp_path, allow=allow).returncode == 1
    assert run([change], tmp_path, allow=r".*/virtualNetworks/v#properties\.subnets\.3").returncode == 1, "the pattern matches all of it"


def test_a_failed_what_if_stops_the_deploy(tmp_path):
    r = run([], tmp_path, error={"code": "InvalidTemplate", "message": "The template resource 'x' is not valid"})
    assert r.returncode == 1 and "what-if failed: The template resource 'x' is not valid" in r.stderr
