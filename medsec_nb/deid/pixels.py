"""Burned-in annotation: flag instances likely to carry text in their pixels, mask rectangles from a rule file.

Rule file (TOML or JSON, see docs/DEID.md): a list ``rule`` of tables, each with ``name``, ``match``
(DICOM keyword -> value; every one must equal the instance's) and ``rectangles`` ([x, y, width, height]
in pixels, from the top-left corner). The first matching rule masks the instance.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..core.errors import MedsecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

#: Modalities whose images commonly carry burned-in text (ultrasound, captures, photographs, documents).
RISKY_MODALITIES = frozenset({"US", "IVUS", "OT", "SC", "XC", "ES", "GM", "SM", "DOC", "OP", "OPT", "IO"})
#: SOP classes made as screenshots or captures: Secondary Capture (single and multi-frame), ultrasound,
#: VL photographic/endoscopic/microscopic and video, encapsulated PDF.
RISKY_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.77.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.2",
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
        "1.2.840.10008.5.1.4.1.1.104.1",
    }
)


class MaskRuleError(MedsecError):
    """A burned-in annotation rule file is unreadable or malformed."""


class BurnedInError(MedsecError):
    """An instance may carry burned-in text and was neither masked nor explicitly allowed."""


def burned_in_reason(ds: Dataset) -> str | None:
    """Why ``ds`` may carry burned-in identifying text, or None.

    Flagged: Burned In Annotation YES, or a modality or SOP class known for it (even when it says NO:
    devices of those kinds often do). Instances without pixel data are never flagged.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "Burned In Annotation is YES"
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality in RISKY_MODALITIES:
        return f"modality {modality} commonly carries burned-in text"
    sop_class = str(ds.get("SOPClassUID", "")).strip()
    if sop_class in RISKY_SOP_CLASSES:
        return (
            f"SOP class {UID(sop_class).name} (a capture) commonly carries burned-in text"  # named: no UID in records
        )
    return None


@dataclass(frozen=True)
class MaskRule:
    """Rectangles (x, y, width, height) to blank in instances whose attributes equal ``match``."""

    name: str
    match: dict[str, Any]
    rectangles: tuple[tuple[int, int, int, int], ...]

    def matches(self, ds: Dataset) -> bool:
        for keyword, want in self.match.items():
            have = ds.get(keyword)
            if have is None:
                return False
            if isinstance(want, str):
                if str(have).strip().upper() != want.strip().upper():
                    return False
            elif isinstance(want, bool) or not isinstance(want, int) or int(have) != want:
                return False
        return True


def load_mask_rules(path: str | os.PathLike[str]) -> tuple[MaskRule, ...]:
    """Read and check a rule file (``.toml`` or ``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MaskRuleError(f"{path}: cannot read rule file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise MaskRuleError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({exc})"
        ) from None
    rules = data.get("rule") if isinstance(data, dict) else None
    if not isinstance(rules, list) or not rules:
        raise MaskRuleError(f"{path}: needs a non-empty list 'rule' ([[rule]] tables in TOML)")
    return tuple(_rule(r, f"{path}: rule {i + 1}") for i, r in enumerate(rules))


def _rule(raw: Any, where: str) -> MaskRule:
    if not isinstance(raw, dict):
        raise MaskRuleError(f"{where}: must be a table with name, match and rectangles")
    unknown = set(raw) - {"name", "match", "rectangles"}
    if unknown:
        raise MaskRuleError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name, match, rects = raw.get("name"), raw.get("match"), raw.get("rectangles")
    if not isinstance(name, str) or not name.strip():
        raise MaskRuleError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name})"
    if not isinstance(match, dict) or not match:
        raise MaskRuleError(f"{where}: 'match' must be a non-empty table of DICOM keyword = value")
    for keyword, value in match.items():
        if tag_for_keyword(keyword) is None:
            raise MaskRuleError(f"{where}: {keyword!r} is not a DICOM keyword")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise MaskRuleError(f"{where}: match value of {keyword} must be a string or an integer")
    if not isinstance(rects, list) or not rects:
        raise MaskRuleError(f"{where}: 'rectangles' must be a non-empty list of [x, y, width, height]")
    out = []
    for r in rects:
        if (
            not (isinstance(r, list) and len(r) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in r))
            or r[0] < 0
            or r[1] < 0
            or r[2] <= 0
            or r[3] <= 0
        ):
            raise MaskRuleError(
                f"{where}: rectangle {r!r} is not [x, y, width, height] with x, y >= 0 and width, height > 0"
            )
        out.append(tuple(r))
    return MaskRule(name.strip(), dict(match), tuple(out))


def mask_burned_in(ds: Dataset, rules: tuple[MaskRule, ...], where: str = "instance") -> str | None:
    """Blank the rectangles of the first rule matching ``ds`` (in place, every frame and sample) and set
    Burned In Annotation to NO; return the rule's name, or None if no rule matches."""
    rule = next((r for r in rules if r.matches(ds)), None)
    if rule is None:
        return None
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()  # written back uncompressed (explicit VR little endian)
        arr = ds.pixel_array.copy()
    except Exception as exc:  # pydicom raises many types for pixel data it cannot decode
        raise MedsecError(
            f"{where}: rule {rule.name!r} matches but its pixel data cannot be decoded ({type(exc).__name__})"
        ) from None
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples, frames = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("NumberOfFrames", 1) or 1)
    shaped = arr.reshape((frames, rows, cols, samples) if samples > 1 else (frames, rows, cols))
    for x, y, w, h in rule.rectangles:
        if x + w > cols or y + h > rows:
            raise MedsecError(
                f"{where}: rule {rule.name!r} rectangle [{x}, {y}, {w}, {h}] lies outside the {cols}x{rows} image"
            )
        shaped[:, y : y + h, x : x + w] = 0
    ds.PixelData = np.ascontiguousarray(shaped).tobytes()
    if samples > 1:
        ds.PlanarConfiguration = 0  # pixel_array is colour-by-pixel whatever the source was
    ds.BurnedInAnnotation = "NO"
    return rule.name
