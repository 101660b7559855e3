"""Runs the real `emberdb` server binary on a temp data dir and a free loopback port (tests and
benches share it).

The binary is $EMBERDB_BIN, else $CARGO_TARGET_DIR/release/emberdb, else
~/.cache/emberdb/target/release/emberdb (where `make test` builds it), else `emberdb` on PATH.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time


def server_binary(name: str = "emberdb") -> str:
    """Path of one of the project's binaries (`emberdb`, `ember`, ...)."""
    explicit = os.environ.get("EMBERDB_BIN")
    if explicit:
        path = explicit if name == "emberdb" else os.path.join(os.path.dirname(explicit), name)
    else:
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/emberdb/target")
        path = os.path.join(target, "release", name)
    if os.path.exists(path):
        return path
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} binary not found at {path}: build it with `make build` or set EMBERDB_BIN")


class Server:
    """A running `emberdb` process; `addr` is its gRPC address."""

    def __init__(self, data_dir: str, extra_args=(), log_level: str = "info"):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [server_binary(), "--data-dir", data_dir, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "off", "--log-format", "json", *extra_args],
            stdout=subprocess.PIPE,  # tracing logs to stdout
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "EMBERDB_LOG": log_level},
        )
        self.addr = None
        self.log = []
        deadline = time.monotonic() + 60
        while self.addr is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"emberdb exited before serving (code {self.proc.wait()}): {''.join(self.log[-20:])}")
            self.log.append(line)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            fields = rec.get("fields", {})
            if fields.get("message") == "serving gRPC":
                self.addr = fields["addr"]
            if time.monotonic() > deadline:
                raise RuntimeError("emberdb did not start within 60 s")
        # Keep draining the log so the server never blocks on a full pipe.
        self._drain = threading.Thread(target=lambda: [self.log.append(l) for l in self.proc.stdout], daemon=True)
        self._drain.start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
