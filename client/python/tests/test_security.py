"""api_key and TLS against the real server: keys from a config file, certificates made by openssl."""
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

import emberdb
from server import Server

ADMIN, READER = "py-admin-key-3141592653", "py-reader-key-2718281828"


def sha256(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def keyed_server():
    tmp = tempfile.mkdtemp(prefix="emberdb-keys-")
    config = os.path.join(tmp, "emberdb.toml")
    with open(config, "w") as f:
        f.write(f'[[auth.keys]]\nname = "admin"\nsha256 = "{sha256(ADMIN)}"\nrole = "admin"\n\n')
        f.write(f'[[auth.keys]]\nname = "reader"\nsha256 = "{sha256(READER)}"\nrole = "reader"\n')
    s = Server(os.path.join(tmp, "data"), ["--config", config])
    yield s
    s.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_api_key_roles(keyed_server):
    with emberdb.Client(keyed_server.addr, api_key=ADMIN, timeout=30) as admin:
        admin.create_version("secure", "v1", dim=3)
        admin.upsert("secure", "v1", [1, 2], np.eye(3)[:2])
    with emberdb.Client(keyed_server.addr, timeout=30) as anonymous:
        with pytest.raises(emberdb.Unauthenticated):
            anonymous.list_collections()
    with emberdb.Client(keyed_server.addr, api_key="wrong", timeout=30) as wrong:
        with pytest.raises(emberdb.Unauthenticated):
            wrong.describe("secure", "v1")
    with emberdb.Client(keyed_server.addr, api_key=READER, timeout=30) as reader:
        assert reader.search("secure", "v1", [1.0, 0.0, 0.0], k=1).ids.tolist() == [1]
        with pytest.raises(emberdb.PermissionDenied):
            reader.upsert("secure", "v1", [3], np.ones((1, 3)))
        with pytest.raises(emberdb.PermissionDenied):
            reader.drop_version("secure", "v1")
        assert reader.describe("secure", "v1").points == 2


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="emberdb-pki-")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=emberdb-test-ca", cwd=d)
    for name, san in [("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:ember-client")]:
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_tls_and_mutual_tls(pki):
    p = lambda n: os.path.join(pki, n)  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="emberdb-tls-")
    s = Server(os.path.join(tmp, "data"), ["--tls-cert", p("server.pem"), "--tls-key", p("server.key")])
    try:
        with emberdb.Client(s.addr, tls_ca=p("ca.pem"), timeout=10) as c:
            assert c.list_collections() == []
        with emberdb.Client(s.addr, timeout=5) as plain:
            with pytest.raises(emberdb.Unavailable):
                plain.list_collections()
    finally:
        s.stop()
    m = Server(os.path.join(tmp, "data2"), ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--tls-client-ca", p("ca.pem")])
    try:
        with emberdb.Client(m.addr, tls_ca=p("ca.pem"), timeout=5) as no_cert:
            with pytest.raises(emberdb.Unavailable):
                no_cert.list_collections()
        with emberdb.Client(m.addr, tls_ca=p("ca.pem"), tls_cert=p("client.pem"), tls_key=p("client.key"), timeout=10) as c:
            assert c.list_collections() == []
    finally:
        m.stop()
        shutil.rmtree(tmp, ignore_errors=True)
