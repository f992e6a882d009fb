"""azure-pipelines.yml against Microsoft's own schema (check-jsonschema,
offline, schema from TRIBUTARY_SCHEMAS_DIR) and the stages it must have."""

import os
import pathlib
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "azure-pipelines.yml"


def schema():
    d = os.environ.get("TRIBUTARY_SCHEMAS_DIR")
    if not d:
        pytest.fail("TRIBUTARY_SCHEMAS_DIR is not set: run the tests with scripts/test", pytrace=False)
    return pathlib.Path(d) / "azure-pipelines" / "service-schema.json"


def check(path):
    return subprocess.run(
        ["check-jsonschema", "--schemafile", str(schema()), "--regex-variant", "python", str(path)],
        capture_output=True, text=True,
    )


def test_pipeline_matches_microsofts_schema():
    r = check(PIPELINE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_schema_check_catches_a_misspelt_key(tmp_path):
    doc = yaml.safe_load(PIPELINE.read_text())
    doc["stages"][0]["jobz"] = doc["stages"][0].pop("jobs")
    bad = tmp_path / "azure-pipelines.yml"
    bad.write_text(yaml.safe_dump(doc))
    assert check(bad).returncode != 0


def test_stages_test_build_then_deploy_with_approvals():
    doc = yaml.safe_load(PIPELINE.read_text())
    stages = {s["stage"]: s for s in doc["stages"]}
    assert list(stages) == ["Test", "Build", "DeployDev", "DeployProd"]
    assert any(step.get("script") == "scripts/test" for step in stages["Test"]["jobs"][0]["steps"]), "CI runs the README's test command"
    assert stages["Build"]["dependsOn"] == "Test"
    assert stages["DeployDev"]["dependsOn"] == "Build"
    assert stages["DeployProd"]["dependsOn"] == "DeployDev"
    for name, env in (("DeployDev", "tributary-dev"), ("DeployProd", "tributary-prod")):
        job = stages[name]["jobs"][0]
        assert job["environment"] == env, "deployment jobs wait on the environment's approvals"
        args = job["strategy"]["runOnce"]["deploy"]["steps"][-1]["inputs"]
        assert args["scriptPath"] == "infra/deploy.sh"
        assert (ROOT / args["scriptPath"]).exists()
        assert (ROOT / "infra" / "bicep" / "params" / f"{args['arguments'].split()[0]}.parameters.json").exists()
    assert "refs/heads/main" in stages["DeployProd"]["condition"]
