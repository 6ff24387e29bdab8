"""``medsec keyservice``: run the key service in the foreground (docs/KEYSERVICE.md)."""

from __future__ import annotations

import argparse
import os

from .options import keyservice_option, purpose_option

KEYSERVICE_EPILOG = """\
example (as the service's own OS user, e.g. `sudo -u medsec`):
  medsec keyservice --socket /run/medsec/keyservice.sock -i /etc/medsec/site-a.key \\
      --key-passphrase-file /etc/medsec/site-a.pass --policy /etc/medsec/site.csv \\
      --log /var/lib/medsec/audit.jsonl --steward-group medsec-stewards

With the site key in OpenBao's Transit engine instead (the private key never leaves OpenBao):
  medsec keyservice --socket /run/medsec/keyservice.sock --policy /etc/medsec/site.csv \\
      --transit-addr https://bao.example:8200 --transit-key site-a --transit-token-file /etc/medsec/bao.token

Analysts then open studies with no key file:
  medsec decrypt study.msec -o OUT/ --keyservice /run/medsec/keyservice.sock --purpose HRESCH
  open_study("study.msec", keyservice="/run/medsec/keyservice.sock", purpose="HRESCH")
The service learns who asks from the kernel (SO_PEERCRED), asks the policy, writes the
record (fsync), and only then releases the study key. Stop it with SIGTERM (a checkpoint
is signed at shutdown and every --checkpoint-every seconds).
"""


def add_keyservice_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's own
    p = sub.add_parser(
        "keyservice",
        help="Run the key service: holds the site keys, decides, records, then releases study keys.",
        description="Run the key service in the foreground: it holds the site keys, the policy and the "
        "authoritative audit log, and releases a study key only after a policy decision and a durable record.",
        epilog=KEYSERVICE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_keyservice)
    add_rewrap_command(sub)  # a key service command too: registered with it
    p.add_argument(
        "--socket",
        metavar="PATH",
        default="/run/medsec/keyservice.sock",
        help="the Unix socket to listen on (default /run/medsec/keyservice.sock)",
    )
    p.add_argument(
        "--hub",
        action="store_true",
        help="serve HTTP as a JupyterHub-managed service: callers send their $JUPYTERHUB_API_TOKEN, the Hub says who",
    )
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="with --hub: where to listen (default $JUPYTERHUB_SERVICE_URL)"
    )
    p.add_argument(
        "-i",
        "--identity",
        action="append",
        default=[],
        metavar="KEY",
        help="a site private key (repeatable); only this service reads it",
    )
    p.add_argument(
        "--transit-key",
        action="append",
        default=[],
        metavar="NAME",
        help="a site key in OpenBao's Transit engine (repeatable): OpenBao decrypts, the private key stays there",
    )
    p.add_argument(
        "--transit-addr",
        metavar="URL",
        default=os.environ.get("BAO_ADDR"),
        help="OpenBao's address for --transit-key (default $BAO_ADDR)",
    )
    p.add_argument(
        "--transit-token-file",
        metavar="F",
        help="file holding the OpenBao token for --transit-key (default $BAO_TOKEN)",
    )
    p.add_argument("--key-passphrase-file", metavar="F", help="file holding the key files' passphrase")
    p.add_argument(
        "--policy",
        metavar="CSV",
        default=os.environ.get("MEDSEC_POLICY"),
        help="the site policy (default $MEDSEC_POLICY, else the shipped default)",
    )
    p.add_argument("--log", metavar="FILE", help="the authoritative audit log (default: the service user's)")
    p.add_argument("--checkpoints", metavar="FILE", help="its checkpoint file (default: beside the log)")
    p.add_argument(
        "--steward",
        action="append",
        default=[],
        metavar="USER",
        help="an OS user who may read every record and sign checkpoints (repeatable)",
    )
    p.add_argument("--steward-group", metavar="GROUP", help="OS group whose members are stewards")
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="sign a checkpoint this often (default 3600) and at shutdown",
    )


def cmd_keyservice(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..access.gate import as_policy
    from ..audit import AuditLog
    from ..core.errors import MedsecError
    from ..keys.identity import load_identity
    from ..keys.transit import SiteKey, TransitKey
    from ..keyservice import KeyServiceConfig, serve
    from ..keyservice.server import stewards_from
    from .prompt import key_passphrase, read_secret_file

    if not args.identity and not args.transit_key:
        raise MedsecError("give the site keys: -i KEY and/or --transit-key NAME")
    identities: list[SiteKey] = [load_identity(k, key_passphrase(args, k)) for k in args.identity]
    if args.transit_key:
        if not args.transit_addr:
            raise MedsecError("--transit-key needs --transit-addr URL (or $BAO_ADDR)")
        if args.transit_token_file:
            token = read_secret_file(args.transit_token_file, "OpenBao token").decode("utf-8", "replace").strip()
        else:
            token = os.environ.get("BAO_TOKEN", "")
        if not token:
            raise MedsecError("--transit-key needs --transit-token-file F (or $BAO_TOKEN)")
        identities += [TransitKey(args.transit_addr, name, token) for name in args.transit_key]
    config = KeyServiceConfig(
        socket=Path(args.socket),
        identities=identities,
        log=AuditLog(args.log, checkpoints=args.checkpoints),
        policy=as_policy(args.policy),
        stewards=stewards_from(args.steward),
        steward_group=args.steward_group,
        checkpoint_seconds=max(1.0, args.checkpoint_every),
    )
    if args.hub:
        from ..keyservice.hub import serve_hub

        serve_hub(config, args.listen)
        return 0
    serve(config)
    return 0


def add_rewrap_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's own
    p = sub.add_parser(
        "rewrap",
        help="Wrap a study's key to the key service's newest site keys; drop stanzas of retired Transit versions.",
        description="Wrap the study key to every site key the key service gives that the study does not have yet "
        "(the newest version of a rotated Transit key) and drop the stanzas of Transit versions OpenBao no longer "
        "decrypts (below the key's min_decryption_version); the payload is not re-encrypted. Policy action "
        "add-recipient.",
        epilog="example:\n  medsec rewrap study.msec --keyservice /run/medsec/keyservice.sock --purpose HRESCH",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_rewrap)
    p.add_argument("container")
    keyservice_option(p, "the key service: its socket, or its URL in JupyterHub", metavar="ADDRESS")
    purpose_option(p)


def cmd_rewrap(args: argparse.Namespace) -> int:
    from ..access.gate import rewrap_study
    from ..access.hub_service import connect
    from ..core.errors import MedsecError

    if not args.keyservice:
        raise MedsecError("rewrap needs --keyservice ADDRESS (or $MEDSEC_KEYSERVICE)")
    done = rewrap_study(
        args.container,
        connect(args.keyservice).recipients(),
        keyservice=args.keyservice,
        purpose=args.purpose,
    )
    if not done.added and not done.dropped:
        print(f"{args.container}: already wrapped to every key the service gives; nothing changed")
    for kid in done.added:
        print(f"added {kid}")
    for kid in done.dropped:
        print(f"dropped {kid} (a retired Transit version)")
    return 0
