"""The Containerfiles in deploy/ against the manifests, scripts/images and the
pipeline (offline: parsing only; scripts/images builds and runs the images)."""

import json
import pathlib
import re

import yaml

from test_manifests import FUNCTIONS, deployment_env, of_kind

ROOT = pathlib.Path(__file__).resolve().parents[2]
CA = "/etc/ssl/certs/ca-certificates.crt"


def instructions(path):
    """(INSTRUCTION, arguments) per line, comments and continuations handled."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1].strip()) for l in text.splitlines() if l.strip()]


def test_one_containerfile_per_function_and_no_other():
    assert sorted(p.name for p in (ROOT / "deploy").glob("*Containerfile*")) == sorted(f"{fn}.Containerfile" for fn in FUNCTIONS)


def test_each_image_is_the_static_binary_in_scratch_non_root_with_a_ca_bundle():
    for fn, (binary, _) in FUNCTIONS.items():
        ins = instructions(ROOT / "deploy" / f"{fn}.Containerfile")
        kinds = [k for k, _ in ins]
        assert ins[0] == ("FROM", "scratch") and kinds.count("FROM") == 1, f"{fn}: one stage, FROM scratch: nothing pulled"
        assert "RUN" not in kinds, f"{fn}: no shell in the image to RUN with"
        copies = {tuple(a.split()) for k, a in ins if k == "COPY"}
        assert copies == {(binary, f"/{binary}"), ("ca-certificates.crt", CA)}, f"{fn}: {copies}"
        assert ("ENV", f"SSL_CERT_FILE={CA}") in ins
        assert json.loads(dict(ins)["ENTRYPOINT"]) == [f"/{binary}"]
        uid, gid = dict(ins)["USER"].split(":")
        assert int(uid) > 0 and int(gid) > 0, "non-root"
        dep = next(d for d in of_kind("Deployment") if d["metadata"]["name"] == fn)
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
        assert dict(ins)["EXPOSE"] == deployment_env(dep)["PORT"]


def test_scripts_images_builds_every_function():
    script = (ROOT / "scripts" / "images").read_text()
    assert set(re.search(r"^FUNCTIONS=\(([^)]*)\)", script, re.M).group(1).split()) == set(FUNCTIONS)
    build = re.search(r"cargo build --release --locked --target \"\$TRIPLE\"[^\n]*\n([^\n]*)", script).group(1)
    packages = set(re.findall(r"-p (\S+)", build))
    assert packages == {f"tributary-{fn}" for fn in FUNCTIONS}, "one crate, and one binary, per function"
    assert "target-feature=+crt-static" in script and "MAX_BYTES=20000000" in script


def test_pipeline_builds_with_scripts_images_and_deploy_pushes_every_function():
    doc = yaml.safe_load((ROOT / "azure-pipelines.yml").read_text())
    steps = next(s for s in doc["stages"] if s["stage"] == "Build")["jobs"][0]["steps"]
    assert any(s.get("script") == "scripts/images" for s in steps)
    assert next(s for s in steps if s.get("task") == "CopyFiles@2")["inputs"]["Contents"] == "tributary-*.oci.tar"
    # infra/deploy.sh pushes the archives scripts/images exported and checked, one per function.
    deploy = (ROOT / "infra" / "deploy.sh").read_text()
    assert set(re.search(r"^FUNCTIONS=\(([^)]*)\)", deploy, re.M).group(1).split()) == set(FUNCTIONS)
    assert '"oci-archive:$images/tributary-$fn.oci.tar"' in deploy
    assert '"docker://$registry/tributary-$fn:$tag"' in deploy
