"""Fixtures: the real `emberdb` server (tests/server.py) and clients connected to it."""
import os
import pathlib
import shutil
import tempfile
import uuid

import pytest

import emberdb
from server import Server


@pytest.fixture(scope="session")
def server():
    tmp = tempfile.mkdtemp(prefix="emberdb-py-")
    s = Server(os.path.join(tmp, "data"))
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def client(server):
    with emberdb.Client(server.addr, timeout=120) as c:
        yield c


@pytest.fixture()
def collection():
    """A collection name no other test uses."""
    return "py-" + uuid.uuid4().hex[:12]


REPO = pathlib.Path(__file__).resolve().parents[3]
