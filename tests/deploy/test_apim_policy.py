"""API Management's policy for ingest (infra/bicep/policies/ingest-api.xml), checked offline (issue 21, item 2).

No API Management gateway runs here, so its C# policy expressions are not
executed. What is checked: the document is well formed once its expressions
are set aside, the policies run in an order that makes the limits mean what
they say (the cheap edge checks before the per-device counters, which count
only requests ingest authenticated), every {{named value}} is one
apim.bicep defines from main.bicep's parameters, the edge checks agree with
ingest's own (content types, body size, error codes) as read from the Rust
source, and the regular expression that takes the device id out of the SAS
token finds exactly the device in tokens the real `tributary token` mints,
and nothing in headers ingest would refuse as malformed (.NET and Python
regular expressions agree on the constructs it uses: classes, groups,
alternation, bounded repetition, anchors).
"""

import base64
import hashlib
import hmac
import json
import pathlib
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from test_bicep import BICEP, module, output_expr, parse, resource
from test_manifests import env_dir

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICY = BICEP / "policies" / "ingest-api.xml"


def split_expressions(text):
    """The policy with every `@(...)` and `@{...}` replaced by `@EXPRn@`, and the expressions in order.
    C# string and character literals are skipped while matching brackets ("..." with \\ escapes, verbatim
    @"..." with "" escapes, '.')."""
    out, exprs, i = [], [], 0
    while i < len(text):
        if text.startswith(("@(", "@{"), i):
            open_, close = text[i + 1], {"(": ")", "{": "}"}[text[i + 1]]
            depth, j = 0, i + 1
            while True:
                c = text[j]
                if text.startswith('@"', j):
                    j += 2
                    while not (text[j] == '"' and text[j + 1] != '"'):
                        j += 2 if text.startswith('""', j) else 1
                elif c == '"':
                    j += 1
                    while text[j] != '"':
                        j += 2 if text[j] == "\\" else 1
                elif c == "'":
                    j += 1
                    while text[j] != "'":
                        j += 2 if text[j] == "\\" else 1
                elif c == open_:
                    depth += 1
                elif c == close:
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            exprs.append(text[i:j + 1])
            out.append(f"@EXPR{len(exprs) - 1}@")
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out), exprs


def policy():
    text, exprs = split_expressions(POLICY.read_text())
    root = ET.fromstring(text)
    return root, exprs


def expr(attr, exprs):
    m = re.fullmatch(r"@EXPR(\d+)@", attr or "")
    assert m, f"not an expression: {attr}"
    return exprs[int(m.group(1))]


def inbound_steps():
    root, exprs = policy()
    return [c for c in root.find("inbound")], exprs


def test_the_policy_is_the_file_apim_bicep_loads_and_parses():
    root, exprs = policy()
    assert root.tag == "policies" and [c.tag for c in root] == ["inbound", "backend", "outbound", "on-error"]
    assert all(s.find("base") is not None for s in root), "every section keeps the outer scopes' policies"
    assert len(exprs) >= 8
    apim = module("apim")
    assert resource(apim, "Microsoft.ApiManagement/service/apis/policies")["properties"] == {
        "format": "rawxml", "value": "loadTextContent('../policies/ingest-api.xml')"}
    assert "dependsOn: [named, interceptor]" in (BICEP / "modules" / "apim.bicep").read_text(), "named values and the backend exist before the policy is saved"


def test_every_named_value_the_policy_uses_is_defined_from_main_bicep():
    text = POLICY.read_text()
    used = set(re.findall(r"\{\{([a-z0-9-]+)\}\}", text))
    assert not re.findall(r"\{\{", "".join(re.findall(r"<!--.*?-->", text, re.S))), "API Management resolves {{...}} in comments too"
    apim = module("apim")
    values = apim["variables"]["namedValues"]
    assert used == set(values), f"used {sorted(used)}, defined {sorted(values)}"
    named = next(r for r in apim["resources"] if r["type"].startswith("Microsoft.ApiManagement/service/namedValues@"))
    assert named["body"]["properties"] == {"displayName": "nv.key", "value": "nv.value", "secret": False}
    assert values == {
        "ingest-host": "ingestHost",
        "ingest-subscription-calls-per-minute": "string(rateLimitPerMinute)",
        "ingest-device-calls-per-minute": "string(deviceRateLimitPerMinute)",
        "ingest-device-calls-per-day": "string(deviceQuotaPerDay)",
        "ingest-max-body-bytes": "string(maxBodyBytes)",
    }
    passed = parse(BICEP / "main.bicep")["modules"]["apim"]["body"]["params"]
    assert (passed["deviceRateLimitPerMinute"], passed["deviceQuotaPerDay"], passed["maxBodyBytes"]) == \
        ("ingestDeviceRateLimitPerMinute", "ingestDeviceQuotaPerDay", "ingestMaxBodyBytes")


def test_checks_come_before_the_device_counters_which_count_only_authenticated_requests():
    steps, exprs = inbound_steps()
    tags = [s.tag for s in steps]
    sub, dev = [i for i, t in enumerate(tags) if t == "rate-limit-by-key"]
    checks = tags.index("choose")
    quota = tags.index("quota-by-key")
    assert tags[0] == "base" and sub < checks < dev < quota < tags.index("set-header"), tags
    # The subscription's ceiling counts everything sent with the key.
    assert expr(steps[sub].get("counter-key"), exprs) == "@(context.Subscription.Id)"
    assert steps[sub].get("calls") == "{{ingest-subscription-calls-per-minute}}" and steps[sub].get("renewal-period") == "60"
    # Per device: keyed on the device from the token, counted unless ingest answered 401 (the token did not verify).
    for step, calls, period in ((steps[dev], "{{ingest-device-calls-per-minute}}", "60"), (steps[quota], "{{ingest-device-calls-per-day}}", "86400")):
        assert (step.get("calls"), step.get("renewal-period")) == (calls, period)
        assert expr(step.get("counter-key"), exprs) == '@("device:" + (string)context.Variables["device"])'
        assert expr(step.get("increment-condition"), exprs) == "@(context.Response.StatusCode != 401)"
    # Which limit tripped is known to the error handler.
    limits = [(i, s.get("value")) for i, s in enumerate(steps) if s.tag == "set-variable" and s.get("name") == "limit"]
    assert [v for _, v in limits] == ["subscription", "device"] and limits[0][0] < sub and checks < limits[1][0] < dev
    host = next(s for s in steps if s.tag == "set-header")
    assert (host.get("name"), host.get("exists-action"), host.find("value").text) == ("Host", "override", "{{ingest-host}}")
    # Last, the backend: the interceptor over HTTPS (apim.bicep's backend entity checks its certificate).
    assert steps[-1].tag == "set-backend-service" and steps[-1].get("backend-id") == "interceptor"


STATUS = {"BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "PAYLOAD_TOO_LARGE": 413,
          "UNSUPPORTED_MEDIA_TYPE": 415, "TOO_MANY_REQUESTS": 429, "SERVICE_UNAVAILABLE": 503}


def ingest_error_codes():
    """Ingest's error code -> its HTTP status, from `ApiError::parts` in the Rust source."""
    src = (ROOT / "functions" / "ingest" / "src" / "error.rs").read_text()
    return {code: STATUS[status] for status, code in re.findall(r'StatusCode::(\w+), "(\w+)"', src)}


def test_edge_refusals_answer_like_ingest():
    """Each refusal at the edge has the status and the error body ingest gives for the same fault, in the order
    411, 413, 415, 401."""
    steps, exprs = inbound_steps()
    whens = steps[[s.tag for s in steps].index("choose")].findall("when")
    codes = ingest_error_codes()
    assert codes["unauthorized"] == 401 and codes["rate_limited"] == 429
    seen = []
    for w in whens:
        resp = w.find("return-response")
        status = int(resp.find("set-status").get("code"))
        body = json.loads(resp.find("set-body").text)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["message"]
        code = body["error"]["code"]
        if code != "length_required":  # ingest reads chunked bodies; only the edge insists on a length
            assert codes[code] == status, f"{code}: ingest answers {codes[code]}, the edge {status}"
        headers = {h.get("name"): h.find("value").text for h in resp.findall("set-header")}
        assert headers["Content-Type"] == "application/json"
        if status == 401:
            assert headers["WWW-Authenticate"] == "SharedAccessSignature", "as ingest"
        seen.append(status)
    assert seen == [411, 413, 415, 401]
    assert "{{ingest-max-body-bytes}}" in expr(whens[1].get("condition"), exprs)


def test_content_types_are_ingests():
    src = (ROOT / "functions" / "ingest" / "src" / "body.rs").read_text()
    fn = src[src.index("pub fn format("):src.index("pub fn decode")]
    ingest = set(re.findall(r'"(application/[a-z-]+)"', fn.split("match essence.as_str()")[1]))
    assert "application/json" in ingest and "application/x-ndjson" in ingest
    steps, exprs = inbound_steps()
    whens = steps[[s.tag for s in steps].index("choose")].findall("when")
    edge = set(re.findall(r'"(application/[a-z-]+)"', expr(whens[2].get("condition"), exprs)))
    assert edge == ingest
    # The same essence ingest compares: before ';', trimmed, lower case.
    ct = next(s for s in steps if s.tag == "set-variable" and s.get("name") == "contentType")
    assert ".Split(';')[0].Trim().ToLowerInvariant()" in expr(ct.get("value"), exprs)


def test_the_body_limit_is_ingests_default_and_deploy_sets_ingest_to_it():
    src = (ROOT / "functions" / "ingest" / "src" / "config.rs").read_text()
    default = eval(re.search(r"max_body_bytes: ([0-9 <<]+),", src).group(1))  # e.g. `1 << 20`
    main = parse(BICEP / "main.bicep")
    assert int(main["params"]["ingestMaxBodyBytes"].rsplit("=", 1)[1]) == default
    assert output_expr(main, "ingestMaxBodyBytes") == "ingestMaxBodyBytes"
    assert "TRIBUTARY_MAX_BODY_BYTES, value: \"$(get ingestMaxBodyBytes)\"" in (ROOT / "infra" / "deploy.sh").read_text()


def device_regex():
    steps, exprs = inbound_steps()
    dev = next(s for s in steps if s.tag == "set-variable" and s.get("name") == "device")
    code = expr(dev.get("value"), exprs)
    assert 'context.Request.Headers.GetValueOrDefault("Authorization", "")' in code
    assert "return m.Success ? m.Groups[1].Value : \"\";" in code
    pattern = re.search(r'Regex\.Match\(auth, @"((?:[^"]|"")*)"\)', code).group(1).replace('""', '"')
    return re.compile(pattern)


def edge_device(header):
    m = device_regex().search(header)
    return m.group(1) if m else ""


def minted(device, fleet_key="edge-test-fleet-key"):
    exe = env_dir("TRIBUTARY_BIN_DIR") / "tributary"
    if not exe.exists():
        pytest.fail(f"{exe} not found: build the workspace first (scripts/test does)", pytrace=False)
    r = subprocess.run([str(exe), "token", device, "--header"], capture_output=True, text=True,
                       env={"TRIBUTARY_FLEET_KEY": fleet_key}, check=True)
    return r.stdout.strip()


@pytest.mark.parametrize("device", ["truck-7", "a", "plant.3:line_2-sensor", "x" * 128])
def test_the_device_id_comes_out_of_tokens_tributary_token_mints(device):
    header = minted(device)
    assert header.startswith("SharedAccessSignature sr=")
    assert edge_device(header) == device
    assert edge_device("Bearer " + header.split(" ", 1)[1]) == device, "the Bearer form ingest accepts too"
    # Ingest takes the fields in any order.
    fields = header.split(" ", 1)[1].split("&")
    assert edge_device("SharedAccessSignature " + "&".join(reversed(fields))) == device


def python_token(device, expiry=4102444800, key=b"k"):
    device_key = hmac.new(key, device.encode(), hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(hmac.new(device_key, f"{device}\n{expiry}".encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"sr={device}&se={expiry}&sig={sig.decode()}"


@pytest.mark.parametrize("header", [
    "",
    "Basic dXNlcjpwYXNz",
    "SharedAccessSignature",
    "SharedAccessSignature se=1&sig=AA",
    "SharedAccessSignature sr=&se=1&sig=AA",
    "SharedAccessSignature sr=a/b&se=1&sig=AA",
    "SharedAccessSignature sr=a b&se=1&sig=AA",
    "SharedAccessSignature " + python_token("y" * 129),
    "sr=truck-7&se=1&sig=AA",
    "Token " + python_token("truck-7"),
])
def test_no_device_comes_out_of_headers_ingest_refuses_as_malformed(header):
    assert edge_device(header) == "", header


def test_on_error_answers_a_tripped_limit_like_ingest():
    root, exprs = policy()
    when = root.find("on-error").find("choose").find("when")
    cond = expr(when.get("condition"), exprs)
    assert '"RateLimitExceeded"' in cond and '"QuotaExceeded"' in cond
    resp = when.find("return-response")
    assert resp.find("set-status").get("code") == "429"
    headers = {h.get("name"): h for h in resp.findall("set-header")}
    retry = expr(headers["Retry-After"].find("value").text, exprs)
    assert 'context.Variables["retryAfter"]' in retry, "the limiter's own retry interval"
    steps, _ = inbound_steps()
    assert all(s.get("retry-after-variable-name") == "retryAfter" for s in steps if s.tag == "rate-limit-by-key")
    body = expr(resp.find("set-body").text, exprs)
    assert 'new JProperty("code", "rate_limited")' in body and ingest_error_codes()["rate_limited"] == 429
