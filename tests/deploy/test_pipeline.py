"""azure-pipelines.yml against Microsoft's own schema (check-jsonschema,
offline, schema from TRIBUTARY_SCHEMAS_DIR), the stages it must have, and how
images travel: Build publishes the archives scripts/images exports and pushes
nothing; each deploy stage downloads them and infra/deploy.sh pushes them to
that environment's registry."""

import os
import pathlib
import re
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


def stages():
    return {s["stage"]: s for s in yaml.safe_load(PIPELINE.read_text())["stages"]}


def deploy_steps(stage):
    return stage["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]


def test_build_publishes_the_image_archives_and_pushes_nothing():
    steps = stages()["Build"]["jobs"][0]["steps"]
    images = next(i for i, s in enumerate(steps) if s.get("script") == "scripts/images")
    # scripts/images exports $root/target/images/tributary-<fn>.oci.tar, root being the checkout.
    script = (ROOT / "scripts" / "images").read_text()
    assert "out=$root/target/images" in script and 'archive=$out/tributary-$fn.oci.tar' in script
    copy = next(s for s in steps if s.get("task") == "CopyFiles@2")["inputs"]
    assert copy["SourceFolder"] == "$(Build.SourcesDirectory)/target/images" and copy["Contents"] == "tributary-*.oci.tar"
    publish = next(s for s in steps if "publish" in s)
    assert publish["artifact"] == "images" and publish["publish"] == copy["TargetFolder"]
    assert images < steps.index(publish)
    text = yaml.safe_dump(steps).lower()
    assert "push" not in text.replace("publish", "") and not any(s.get("task", "").startswith("AzureCLI") for s in steps), \
        "Build pushes nothing: the registry of each environment gets the images in its deploy stage"


def test_each_deploy_stage_downloads_the_images_and_hands_them_and_its_secrets_to_deploy_sh():
    script = (ROOT / "infra" / "deploy.sh").read_text()
    secret_params = {p.split("=")[0]: p.split("=")[1] for array in ("SECRET_PARAMS", "OPTIONAL_SECRET_PARAMS")
                     for p in re.search(rf"^{array}=\(([^)]*)\)", script, re.M).group(1).split()}
    assert "splunkHecToken" in secret_params, "the optional secrets are handed over too"
    assert "TRIBUTARY_IMAGES_DIR" in script and 'buildah --storage-driver vfs' in script
    for name in ("DeployDev", "DeployProd"):
        stage = stages()[name]
        steps = deploy_steps(stage)
        download = next(i for i, s in enumerate(steps) if s.get("download") == "current" and s.get("artifact") == "images")
        deploy = steps[-1]
        assert deploy["inputs"]["scriptPath"] == "infra/deploy.sh" and download < len(steps) - 1
        helm = next(i for i, s in enumerate(steps) if s.get("task") == "HelmInstaller@1")
        assert helm < len(steps) - 1 and re.fullmatch(r"3\.\d+\.\d+", steps[helm]["inputs"]["helmVersionToInstall"]), \
            "a pinned Helm 3 before deploy.sh (it installs the KEDA HTTP add-on)"
        env = deploy["env"]
        assert env["TRIBUTARY_IMAGES_DIR"] == "$(Pipeline.Workspace)/images", "where download puts artifact `images`"
        for param, var in secret_params.items():
            assert env[var] == f"$({param})", f"{name}: {var} from the secret variable {param}"
        groups = [v["group"] for v in stage["variables"] if "group" in v]
        assert groups == [f"tributary-{name[len('Deploy'):].lower()}-secrets"], "each environment its own secrets"


def test_pull_request_builds_never_deploy():
    """A PR build runs Test and Build only: each deploy stage (and so its secret
    variable group) is conditioned on a non-PR build of main, on top of the
    previous stage having succeeded."""
    for name in ("DeployDev", "DeployProd"):
        cond = re.sub(r"\s+", "", stages()[name].get("condition", ""))
        assert cond.startswith("and(succeeded(),"), f"{name}: runs only after the previous stage succeeded"
        assert "ne(variables['Build.Reason'],'PullRequest')" in cond, f"{name}: never for pull-request builds"
        assert "eq(variables['Build.SourceBranch'],'refs/heads/main')" in cond, f"{name}: only for main"
    for name in ("Test", "Build"):
        assert "condition" not in stages()[name], f"{name} still validates pull requests"
