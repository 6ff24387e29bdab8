"""Helpers of the audited reveal: element paths into nested datasets and justification checks."""

from __future__ import annotations

import re

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.tag import Tag

from ..core.errors import JustificationError

#: Shortest justification accepted for a reveal (characters, surrounding blanks not counted).
MIN_JUSTIFICATION = 12
MAX_JUSTIFICATION = 500

_STEP = re.compile(r"(?:([A-Za-z][A-Za-z0-9]*)|\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\))(?:\[(\d+)\])?$")


def check_justification(text: str) -> str:
    """``text`` stripped, if it has at least :data:`MIN_JUSTIFICATION` characters (at most 500)."""
    text = (text or "").strip()
    if len(text) < MIN_JUSTIFICATION:
        raise JustificationError(
            f"a reveal needs a justification of at least {MIN_JUSTIFICATION} characters "
            f"(why this value is needed); got {len(text)}"
        )
    if len(text) > MAX_JUSTIFICATION:
        raise JustificationError(f"a justification may have at most {MAX_JUSTIFICATION} characters")
    return text


def element_path(steps: list[tuple[int, int | None]]) -> str:
    """The path text of ``[(tag, item index or None), ...]``: keywords, else ``(GGGG,EEEE)``."""
    parts = []
    for tag, item in steps:
        kw = keyword_for_tag(tag) if not Tag(tag).is_private else ""
        t = Tag(tag)
        parts.append((kw or f"({t.group:04X},{t.element:04X})") + ("" if item is None else f"[{item}]"))
    return ".".join(parts)


def element_at(ds: pydicom.Dataset, path: str) -> pydicom.DataElement | None:
    """The element at ``path`` (``Keyword``, ``(0009,1001)``, ``Seq[0].Keyword``...) or None."""
    node: pydicom.Dataset = ds
    steps = path.split(".")
    for n, step in enumerate(steps):
        m = _STEP.match(step.strip())
        if m is None:
            return None
        kw, group, elem, item = m.groups()
        tag = tag_for_keyword(kw) if kw else Tag(int(group, 16), int(elem, 16))
        if tag is None or tag not in node:
            return None
        found = node[tag]
        last = n == len(steps) - 1
        if item is None:
            return found if last else None
        if found.VR != "SQ" or int(item) >= len(found.value) or last:
            return None
        node = found.value[int(item)]
    return None
