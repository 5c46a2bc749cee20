"""Fixtures of the end-to-end tests: the `remdb` binary, a database with two tenants,
a user and a token, and a running `remdb serve` on 127.0.0.1 with an OS-chosen port."""

import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REMDB = os.environ.get("REMDB_BIN", os.path.join(ROOT, "target", "debug", "remdb"))


def remdb(*args, input=None, env=None, check=True):
    """Runs the remdb binary and returns its completed process."""
    full_env = dict(os.environ, REMDB_LOG="warn")
    full_env.update(env or {})
    proc = subprocess.run(
        [REMDB, *args], input=input, capture_output=True, text=True, env=full_env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"remdb {' '.join(args)} failed: {proc.stderr}")
    return proc


class Server:
    def __init__(self, path, timeout, grace=5, env=None):
        self.path = path
        self.log = open(os.path.join(path, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [REMDB, "serve", "--path", path, "--listen", "127.0.0.1:0",
             "--query-timeout", str(timeout), "--shutdown-grace", str(grace)],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=dict(os.environ, REMDB_LOG="remdb=info", **(env or {})),
        )
        line = self.proc.stdout.readline()
        match = re.search(r"on (127\.0\.0\.1:\d+)", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line!r} {self.logs()}")
        self.uri = f"grpc://{match.group(1)}"

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.proc.returncode


def make_database():
    """A database directory with tenants acme (user ada / pw-acme) and globex (a token),
    a few entities in each."""
    tmp = tempfile.mkdtemp(prefix="remdb-e2e-")
    path = os.path.join(tmp, "db")
    remdb("sql", "--path", path, "--tenant", "acme", "--create", "-c",
          "INSERT INTO entities (id, type, name) VALUES ('ada', 'person', 'Ada'), ('alan', 'person', 'Alan')")
    remdb("sql", "--path", path, "--tenant", "globex", "--create", "-c",
          "INSERT INTO entities (id, type, name) VALUES ('grace', 'person', 'Grace')")
    remdb("tenant", "add-user", "--path", path, "acme", "ada", input="pw-acme\n")
    token = remdb("token", "create", "--path", path, "globex", "--label", "e2e").stdout.strip()
    assert token.startswith("rdb_"), token
    return {"path": path, "globex_token": token}


@pytest.fixture(scope="session")
def database():
    return make_database()


@pytest.fixture(scope="session")
def server(database):
    srv = Server(database["path"], timeout=2)
    yield srv
    assert srv.stop() == 0, srv.logs()
