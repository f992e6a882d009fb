"""infra/interceptor_tls.sh, run for real: the certificates it issues carry the TLS from API Management to the
interceptor. A TLS server with them (openssl s_server) is reached by a client that checks the chain against the
CA infra/deploy.sh gives API Management and the name against the address, as API Management's backend entity
does; the script keeps what is still good on a second deploy and renews what is due, trusting the previous CA
through a change of CA.
"""

import base64
import json
import pathlib
import shutil
import socket
import ssl
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "interceptor_tls.sh"
IP, NAME = "10.40.4.10", "interceptor.tributary.internal"


def run(d, ip=IP, name=NAME):
    """Both steps, as infra/deploy.sh runs them (the CA before Bicep, the certificate after): their output."""
    out = ""
    for args in (["ca", str(d)], ["cert", str(d), ip, name]):
        r = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out += r.stdout
    return out


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def files(d):
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(d).iterdir())}


def der(pem_path):
    return subprocess.run(["openssl", "x509", "-in", str(pem_path), "-outform", "der"], check=True, capture_output=True).stdout


def handshake(d, cafile, server_name):
    """Serve d/tls.crt with openssl s_server on a free port and connect as API Management does: chain checked
    against `cafile`, the certificate's name against `server_name`. The client's error, or None."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(d / "tls.crt"),
                               "-key", str(d / "tls.key"), "-www", "-quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "openssl s_server did not start"
                time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(cafile))
        try:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert tls.recv(64).startswith(b"HTTP/1.0 200")
                return None
        except ssl.SSLError as e:
            return e
    finally:
        server.kill()
        server.wait()


@pytest.fixture()
def state(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    return d


def test_a_first_deploy_gets_a_ca_and_a_certificate_api_management_accepts(state, tmp_path):
    out = run(state)
    assert "new CA" in out and "issued a certificate" in out
    assert {"ca.crt", "ca.key", "tls.crt", "tls.key", "apim-ca.json", "renewed"} == set(files(state))
    for key in ("ca.key", "tls.key"):
        assert (state / key).stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    # What Bicep gets: exactly the CA, base64 DER.
    assert [base64.b64decode(c) for c in json.loads((state / "apim-ca.json").read_text())] == [der(state / "ca.crt")]
    text = subprocess.run(["openssl", "x509", "-in", str(state / "tls.crt"), "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert f"IP Address:{IP}, DNS:{NAME}" in text and "TLS Web Server Authentication" in text and "CA:FALSE" in text

    # A client that checks chain and name, as API Management's backend entity does, completes the handshake...
    assert handshake(state, state / "ca.crt", IP) is None
    # ...and refuses the certificate for another address, or under another CA.
    err = handshake(state, state / "ca.crt", "10.40.4.11")
    assert isinstance(err, ssl.SSLCertVerificationError) and "IP address mismatch" in str(err), err
    other = tmp_path / "other"
    other.mkdir()
    run(other)
    err = handshake(state, other / "ca.crt", IP)
    assert isinstance(err, ssl.SSLCertVerificationError) and "unable to get local issuer" in str(err), err


def test_the_certificate_step_needs_the_ca_and_an_address(state):
    r = subprocess.run([SCRIPT, "cert", str(state), IP, NAME], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "run the ca step first" in r.stderr
    subprocess.run([SCRIPT, "ca", str(state)], check=True, capture_output=True, timeout=60)
    assert set(files(state)) == {"ca.crt", "ca.key", "apim-ca.json"}, "the CA step issues no certificate"
    r = subprocess.run([SCRIPT, "cert", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ip address" in r.stderr
    assert not (state / "tls.crt").exists()


def test_a_second_deploy_keeps_everything(state):
    run(state)
    before = files(state)
    out = run(state)
    assert "kept the certificate" in out and "new CA" not in out
    after = files(state)
    assert "renewed" not in after
    before.pop("renewed")
    assert after == before, "a deploy with nothing due changed the CA or the certificate"


def test_a_certificate_due_for_renewal_or_for_another_address_is_reissued_under_the_same_ca(state):
    run(state)
    ca = (state / "ca.crt").read_bytes()
    # A certificate from the same CA with 10 days left.
    issue_leaf(state, 10)
    assert "issued a certificate" in run(state)
    assert (state / "renewed").exists() and (state / "ca.crt").read_bytes() == ca
    assert handshake(state, state / "ca.crt", IP) is None
    # The load balancer's address changed: the certificate must name the new one.
    assert "issued a certificate" in run(state, ip="10.40.4.20")
    assert handshake(state, state / "ca.crt", "10.40.4.20") is None
    assert (state / "ca.crt").read_bytes() == ca


def issue_leaf(d, days):
    """A certificate for IP and NAME from d's CA, as an earlier deploy left it."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "tls.key",
            "-out", "tls.csr", "-subj", f"/CN={NAME}", cwd=d)
    (d / "ext").write_text(f"subjectAltName=IP:{IP},DNS:{NAME}\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "7",
            "-days", str(days), "-extfile", "ext", "-out", "tls.crt", cwd=d)
    (d / "tls.csr").unlink()
    (d / "ext").unlink()


def test_a_ca_near_its_end_is_replaced_and_the_previous_one_stays_trusted(state):
    # What an old environment holds: a CA with 100 days left and a certificate it issued.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "100", "-subj", "/CN=old CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=state)
    issue_leaf(state, 90)
    old_ca = (state / "ca.crt").read_bytes()
    old_dir = state.parent / "old"
    shutil.copytree(state, old_dir)
    out = run(state)
    assert "new CA" in out and "issued a certificate" in out
    assert (state / "ca-previous.crt").read_bytes() == old_ca and (state / "ca.crt").read_bytes() != old_ca
    trusted = [base64.b64decode(c) for c in json.loads((state / "apim-ca.json").read_text())]
    assert trusted == [der(state / "ca.crt"), der(state / "ca-previous.crt")]
    # API Management trusts both: the interceptor serving the old certificate (until its restart) or the new one.
    bundle = state.parent / "bundle.pem"
    bundle.write_bytes((state / "ca.crt").read_bytes() + (state / "ca-previous.crt").read_bytes())
    assert handshake(state, bundle, IP) is None
    assert handshake(old_dir, bundle, IP) is None
    assert isinstance(handshake(old_dir, state / "ca.crt", IP), ssl.SSLCertVerificationError), "the new CA alone"
    # The next deploy keeps the new CA and still trusts the previous one until it expires.
    assert "kept the certificate" in run(state)
    assert (state / "ca-previous.crt").read_bytes() == old_ca
    assert len(json.loads((state / "apim-ca.json").read_text())) == 2
