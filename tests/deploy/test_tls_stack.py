"""One TLS stack beside librdkafka's OpenSSL (issue 21, item 5), read off Cargo.lock: rustls with ring for
everything else, so no native-tls, no OpenSSL Rust bindings, no aws-lc anywhere in the build, and only
librdkafka's build (rdkafka-sys) pulls OpenSSL in."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def packages():
    return tomllib.loads((ROOT / "Cargo.lock").read_text())["package"]


def test_no_second_tls_stack_is_in_the_build():
    names = {p["name"] for p in packages()}
    assert {"rustls", "ring", "openssl-sys", "rdkafka-sys"} <= names
    for banned in ("native-tls", "openssl", "hyper-tls", "tokio-native-tls", "aws-lc-rs", "aws-lc-sys"):
        assert banned not in names, f"{banned} is in Cargo.lock: a second TLS stack"


def test_only_librdkafka_pulls_openssl_in():
    users = {p["name"] for p in packages() for d in p.get("dependencies", []) if d.split(" ")[0] == "openssl-sys"}
    assert users == {"rdkafka-sys"}, users
