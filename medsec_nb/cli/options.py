"""Options several ``medsec`` commands share, defined once: the purpose of use and the key service.

Each takes a parser, an argument group or a mutually exclusive group (anything with ``add_argument``).
"""

from __future__ import annotations

import argparse
import os

Options = argparse.ArgumentParser | argparse._ArgumentGroup  # groups, mutually exclusive ones too


def purpose_option(p: Options, example: str = "e.g. TREAT, HRESCH (research), EDU") -> None:
    """``--purpose CODE``, default ``$MEDSEC_PURPOSE``."""
    p.add_argument(
        "--purpose",
        metavar="CODE",
        default=os.environ.get("MEDSEC_PURPOSE"),
        help=f"purpose of use, recorded; {example} (default $MEDSEC_PURPOSE)",
    )


def keyservice_option(p: Options, help_: str, metavar: str = "SOCKET") -> None:
    """``--keyservice ADDRESS``, default ``$MEDSEC_KEYSERVICE``."""
    p.add_argument(
        "--keyservice",
        metavar=metavar,
        default=os.environ.get("MEDSEC_KEYSERVICE"),
        help=f"{help_} (default $MEDSEC_KEYSERVICE)",
    )
