"""Redaction for display: what is shown of a dataset, never the identifying values.

An element is shown as ``REDACTED`` when the PS3.15 Basic Profile (``medsec_nb.deid``)
would remove or replace it (names, IDs, dates, UIDs, descriptions, institution, device
and physician identity, every private element), and always when it is a Person Name;
sequences are not expanded.
"""

from __future__ import annotations

from typing import Iterator

import pydicom

from .deid import Profile, display_action

REDACTED = "\u2588 redacted"

#: The display profile: the PS3.15 Basic Application Level Confidentiality Profile, no options.
DISPLAY_PROFILE = Profile(frozenset())


def is_identifying(elem: pydicom.DataElement) -> bool:
    """Hidden unless the Basic Profile keeps it (private elements never are); any Person Name too."""
    return elem.VR == "PN" or display_action(elem.tag, DISPLAY_PROFILE) != "keep"


def display_value(elem: pydicom.DataElement, limit: int = 64) -> str:
    """The value as it may be shown: redacted if identifying, sequences and bulk data summarised."""
    if is_identifying(elem):
        return REDACTED
    if elem.VR == "SQ":
        return f"<sequence, {len(elem.value)} item(s), not shown>"
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return f"<{elem.VR}, {len(elem.value or b'')} bytes>"
    text = str(elem.value)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def redacted_items(ds: pydicom.Dataset) -> Iterator[tuple[str, str, str]]:
    """(tag, keyword, displayed value) for every top-level element except Pixel Data."""
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        yield f"({elem.tag.group:04X},{elem.tag.element:04X})", elem.keyword or "(private)", display_value(elem)
