"""Fixtures: start the oos-emulator binary on free loopback ports and build official SDK clients."""
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from alibabacloud_oos20190601.client import Client
from alibabacloud_tea_openapi.models import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("OOS_EMULATOR_BIN", os.path.join(ROOT, "target", "debug", "oos-emulator"))

# Keys passed to the emulator. The owner ids are account ids (docs/emulator.md, A17).
AK = ("confAccessKeyId", "confAccessKeySecret", "1111111111111111")
AK_OTHER = ("confOtherKeyId", "confOtherKeySecret", "2222222222222222")
STS = ("STS.confStsKeyId", "confStsSecret", "CAIS+conf/Token==", "1111111111111111")
UUID_RE = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")


class Emulator:
    def __init__(self, proc, api, admin):
        self.proc, self.api, self.admin = proc, api, admin
        self.host = api.split("://", 1)[1]

    def admin_call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.admin + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    state = tmp_path_factory.mktemp("state") / "state.json"
    args = [
        BIN, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--state-file", str(state),
        "--access-key", ":".join(AK), "--access-key", ":".join(AK_OTHER), "--sts-key", ":".join(STS),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    api = admin = None
    deadline = time.time() + 20
    while time.time() < deadline and (api is None or admin is None):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"listening on (http://\S+)", line):
            api = m.group(1)
        if m := re.search(r"admin on (http://\S+)", line):
            admin = m.group(1)
    if api is None or admin is None:
        proc.kill()
        raise RuntimeError("oos-emulator did not start: " + proc.stderr.read())
    emu = Emulator(proc, api, admin)
    yield emu
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(autouse=True)
def clean(emulator):
    emulator.admin_call("DELETE", "/faults")
    emulator.admin_call("POST", "/reset?state=true")
    yield


def make_client(emulator, key_id, secret, token=None, **kw):
    cfg = Config(access_key_id=key_id, access_key_secret=secret, security_token=token,
                 endpoint=emulator.host, protocol="http", region_id="cn-hangzhou",
                 read_timeout=10000, connect_timeout=5000, **kw)
    return Client(cfg)


@pytest.fixture
def client(emulator):
    return make_client(emulator, AK[0], AK[1])


def pytest_sessionfinish(session, exitstatus):
    # "No tests ran" must never look like success.
    if session.testscollected == 0:
        session.exitstatus = 1
