"""``medsec receive``: run the C-STORE SCP in the foreground (docs/PACS.md)."""

from __future__ import annotations

import argparse

from .options import keyservice_option, purpose_option

RECEIVE_EPILOG = """\
example:
  medsec receive -o INCOMING/ -r site-a.pub --ae-title MEDSEC --port 11112 --allow-caller ORTHANC --purpose TREAT

Each study is written to INCOMING/<time>-<hash>.msec for the recipients when the association that
sent it ends (or, with --quiet-period S, once no instance of it arrived for S seconds and every
association that sent to it ended: a study sent over several associations becomes one container).
Received instances are encrypted as they arrive: no plaintext is written anywhere. Every container
and every refused association is recorded in the audit log. Stop with SIGTERM or Ctrl-C: open
associations are aborted and every instance already accepted is written before exit. The access
policy must allow you action "receive" (asked once, before listening; with --keyservice the key
service decides and its log records).
"""


def add_receive_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's own
    p = sub.add_parser(
        "receive",
        help="Receive studies over DICOM C-STORE straight into .msec containers (no plaintext on disk).",
        description="Run a DICOM C-STORE SCP in the foreground: each incoming study is encrypted into its own .msec.",
        epilog=RECEIVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_receive)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="existing folder for the containers")
    p.add_argument("-r", "--recipient", action="append", default=[], metavar="KEY.pub", help="public key (repeatable)")
    p.add_argument("--to-keyservice", metavar="SOCKET", help="also encrypt to the key service's site keys")
    keyservice_option(p, "the key service whose policy decides and whose log records")
    p.add_argument("--ae-title", default="MEDSEC", metavar="AE", help="our AE title (default MEDSEC)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11112, help="port to listen on (default 11112; 0: any free port)")
    p.add_argument(
        "--allow-caller", action="append", default=[], metavar="AE", help="a calling AE title allowed (repeatable)"
    )
    p.add_argument("--any-caller", action="store_true", help="accept associations from any calling AE title")
    p.add_argument(
        "--allow-non-image", action="store_true", help="accept every storage SOP class, not only image storage"
    )
    p.add_argument(
        "--max-instance-mb",
        type=int,
        default=1024,
        metavar="MB",
        help="refuse (0xA700) an instance larger than this, while it arrives (default 1024)",
    )
    p.add_argument(
        "--quiet-period",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep a study open this long after its last instance (default 0: one container per association)",
    )
    purpose_option(p, "e.g. TREAT, with every ingest")


def cmd_receive(args: argparse.Namespace) -> int:
    import logging
    import signal
    import sys
    import threading
    from typing import Any

    from ..pacs.receive import receive

    recipients: list[Any] = list(args.recipient)
    if args.to_keyservice:
        from ..access.hub_service import connect

        recipients += connect(args.to_keyservice).recipients()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("medsec receive: %(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log = logging.getLogger("medsec_nb.pacs.receive")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").addHandler(logging.NullHandler())  # our log says what matters, in one line
    logging.getLogger("pynetdicom").propagate = False
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    written = receive(
        args.output,
        recipients,
        stop=stop,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        allowed_callers=args.allow_caller,
        any_caller=args.any_caller,
        allow_non_image=args.allow_non_image,
        quiet=args.quiet_period,
        max_instance_bytes=args.max_instance_mb << 20,
        purpose=args.purpose,
        keyservice=args.keyservice,
    )
    print(f"received {sum(r.instances for r in written)} instance(s) into {len(written)} container(s)")
    return 0
