"""Redaction for display: what is shown of a dataset, never the identifying values.

An element is shown as ``REDACTED`` when the display profile (the PS3.15 Basic Profile of
``medsec_nb.deid`` plus the options chosen with :func:`set_profile`) would remove or replace
it, and always when it is a Person Name; sequences are not expanded. The default is the
Basic Profile without options: names, IDs, dates, UIDs, descriptions, institution, device
and physician identity and every private element are hidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pydicom
from pydicom.tag import Tag

from . import OPTIONS, Profile, display_action

REDACTED = "\u2588 redacted"

#: Profile names accepted by :func:`set_profile`; "conservative" is the former name of "basic".
PROFILE_NAMES = ("basic", "conservative")

#: The PS3.15 Basic Application Level Confidentiality Profile, no options.
DISPLAY_PROFILE = Profile(frozenset())

_current = DISPLAY_PROFILE


def make_profile(name: str = "basic", options: Iterable[str] = ()) -> Profile:
    """The display profile called ``name`` with ``options`` (names from ``deid.OPTIONS``).

    Raises ValueError naming the unknown profile or option, or the conflicting options.
    """
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown redaction profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    options = frozenset(options)
    unknown = options - OPTIONS
    if unknown:
        raise ValueError(
            f"unknown redaction option(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(OPTIONS))}"
        )
    return Profile(options)


def set_profile(name: str = "basic", options: Iterable[str] = ()) -> Profile:
    """Use profile ``name`` with ``options`` for every display from now on; return it."""
    global _current
    _current = make_profile(name, options)
    return _current


def current_profile() -> Profile:
    """The profile every display uses (see :func:`set_profile`)."""
    return _current


def private_creator(ds: pydicom.Dataset | None, tag: int) -> str:
    """The private creator reserving the block of private ``tag`` in ``ds`` ("" if none)."""
    t = Tag(tag)
    if ds is None or not t.is_private or t.element < 0x1000:
        return ""
    block = ds.get(Tag(t.group, t.element >> 8))
    return str(block.value) if block is not None and isinstance(block.value, str) else ""


def is_identifying(elem: pydicom.DataElement, profile: Profile | None = None, creator: str = "") -> bool:
    """Hidden unless ``profile`` (default: the current one) keeps it; any Person Name too."""
    return elem.VR == "PN" or display_action(elem.tag, profile or _current, creator) != "keep"


def display_value(elem: pydicom.DataElement, limit: int = 64, profile: Profile | None = None, creator: str = "") -> str:
    """The value as it may be shown: redacted if identifying, sequences and bulk data summarised."""
    if is_identifying(elem, profile, creator):
        return REDACTED
    return summary_value(elem, limit)


def summary_value(elem: pydicom.DataElement, limit: int = 64) -> str:
    """The value unredacted, with sequences and bulk data summarised and long text cut."""
    if elem.VR == "SQ":
        return f"<sequence, {len(elem.value)} item(s), not shown>"
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return f"<{elem.VR}, {len(elem.value or b'')} bytes>"
    text = str(elem.value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def tag_text(tag: int) -> str:
    """``(GGGG,EEEE)``."""
    t = Tag(tag)
    return f"({t.group:04X},{t.element:04X})"


def redacted_items(ds: pydicom.Dataset, profile: Profile | None = None) -> Iterator[tuple[str, str, str]]:
    """(tag, keyword, displayed value) for every top-level element except Pixel Data."""
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        yield (
            tag_text(elem.tag),
            elem.keyword or "(private)",
            display_value(elem, profile=profile, creator=private_creator(ds, elem.tag)),
        )
