"""De-identified export of a set of instances: de-identify, mask, scan, report, write atomically.

The audited entry points (purpose, policy, audit record) are in ``medsec_nb.deid_export``; this
module works on (name, dataset) pairs and writes either a plain DICOM folder or a new container.
Nothing is written unless every instance passed: a flagged instance, a leak or an error leaves
no output behind (and an existing output untouched).
"""

from __future__ import annotations

import copy
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_dir
from ..container.sources import SourceInstance, split_instance
from ..container.writer import write_container
from ..errors import MedsecError, OutputError
from . import table
from .engine import Profile, deidentify
from .keys import DeidKeys
from .pixels import BurnedInError, MaskRule, burned_in_reason, mask_burned_in
from .scan import find_leaks, identifying_values

#: Elements whose values are compared by length only (bulk data).
_BULK = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


class LeakError(MedsecError):
    """A de-identified output still holds an identifying value of its original; nothing was written."""


@dataclass(frozen=True)
class Change:
    """One element's fate in one instance; its display redacts every value that was changed."""

    path: str
    keyword: str
    vr: str
    action: str            # kept | removed | replaced | emptied | uid-replaced | shifted | pseudonymised | added
    old: pydicom.DataElement | None = field(default=None, repr=False)
    new: pydicom.DataElement | None = field(default=None, repr=False)

    @property
    def before(self) -> str:
        if self.old is None:
            return "-"
        return _shown(self.old) if self.action == "kept" else _redacted(self.old)

    @property
    def after(self) -> str:
        return "-" if self.new is None else _shown(self.new)


@dataclass
class ExportReport:
    """What an export did: per action, per attribute, per instance; JSON-able and printable."""

    profile: list[str]
    instances: int = 0
    output: str | None = None
    encrypted: bool = False
    dry_run: bool = False
    actions: Counter = field(default_factory=Counter)
    attributes: dict[str, Counter] = field(default_factory=dict)
    private_removed: int = 0
    burned_in: list[dict[str, str]] = field(default_factory=list)
    leak_hits: int = 0
    accepted_leaks: list[dict[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)   # filled for dry runs only

    def add(self, changes: list[Change], keep_changes: bool) -> None:
        for c in changes:
            self.actions[c.action] += 1
            if c.keyword.startswith("("):
                if c.action == "removed":
                    self.private_removed += 1
                continue
            self.attributes.setdefault(c.keyword, Counter())[c.action] += 1
        if keep_changes:
            self.changes.extend(changes)

    def to_json(self) -> dict[str, Any]:
        """The conformance report (docs/DEID.md, "Conformance report")."""
        by_rule: dict[str, Counter] = {}
        for keyword, counts in self.attributes.items():
            row = next((r for r in table.rows() if r.keyword == keyword), None)
            if row is not None:
                by_rule.setdefault(row.basic, Counter()).update(counts)
        return {
            "standard": f"DICOM PS3.15 {table.EDITION} Table E.1-1 (Basic Profile), Table E.3.4-1 and "
                        "E.3.10-1 (2023b)",
            "profile": ["basic", *self.profile], "instances": self.instances, "output": self.output,
            "encrypted": self.encrypted, "dry_run": self.dry_run,
            "actions": dict(sorted(self.actions.items())),
            "by_basic_profile_code": {k: dict(sorted(v.items())) for k, v in sorted(by_rule.items())},
            "attributes": {k: dict(sorted(v.items())) for k, v in sorted(self.attributes.items())},
            "private_elements_removed": self.private_removed,
            "burned_in": self.burned_in, "leak_scan": {"instances_scanned": self.instances, "hits": self.leak_hits,
                                         "accepted": self.accepted_leaks},
        }

    def summary(self) -> str:
        """A short human summary."""
        verb = "would de-identify" if self.dry_run else "de-identified"
        where = "" if self.dry_run or not self.output else f" -> {self.output}" + (" (encrypted)" if self.encrypted else "")
        lines = [f"{verb} {self.instances} instance(s){where}; profile basic"
                 + "".join(f" +{o}" for o in self.profile)]
        lines.append("  " + ", ".join(f"{n} {a}" for a, n in sorted(self.actions.items()) if a != "kept")
                     + f"; {self.actions.get('kept', 0)} kept")
        changed = sorted((k for k, v in self.attributes.items() if set(v) - {"kept"}))
        if changed:
            lines.append(f"  attributes changed ({len(changed)}): " + ", ".join(changed[:12])
                         + (", ..." if len(changed) > 12 else ""))
        if self.private_removed:
            lines.append(f"  private elements removed: {self.private_removed}")
        for b in self.burned_in:
            lines.append(f"  burned-in: {b['instance']}: {b['reason']} -> {b['outcome']}")
        lines.append(f"  leak scan: {self.instances} output(s) scanned, {self.leak_hits} hit(s)"
                     + (f", {len(self.accepted_leaks)} accepted by --accept-leak-in" if self.accepted_leaks else ""))
        return "\n".join(lines)

    def diff_lines(self) -> list[str]:
        """The dry-run diff: one line per changed element, identifying values redacted."""
        return [f"{c.path:<28} {c.keyword or '?':<34} {c.action:<13} {c.before} -> {c.after}"
                for c in self.changes if c.action != "kept"]


def _redacted(elem: pydicom.DataElement | RawDataElement) -> str:
    if isinstance(elem, RawDataElement):
        return f"<redacted {elem.VR or 'UN'}, {len(elem.value or b'')} bytes>"
    if elem.VR == "SQ":
        return f"<{len(elem.value or ())} item(s)>"
    n = len(elem.value) if isinstance(elem.value, (bytes, bytearray, str)) else len(str(elem.value or ""))
    return f"<redacted {elem.VR}, {n} chars>"


def _shown(elem: pydicom.DataElement | RawDataElement) -> str:
    if isinstance(elem, RawDataElement):
        return f"<{len(elem.value or b'')} bytes>"
    if elem.VR == "SQ":
        return f"<{len(elem.value or ())} item(s)>"
    if int(elem.tag) in _BULK or isinstance(elem.value, (bytes, bytearray)):
        return f"<{len(elem.value or b'')} bytes>"
    text = str(elem.value if elem.value is not None else "")
    return repr(text if len(text) <= 64 else text[:61] + "...")


def diff(before: Dataset, after: Dataset, path: str = "") -> list[Change]:
    """Element by element, at every depth: what de-identification did (before values redacted)."""
    out: list[Change] = []
    raw_before, raw_after = dict(before.items()), dict(after.items())   # elements as stored: no parsing
    for tag in sorted(raw_before):
        where = f"{path}({tag.group:04X},{tag.element:04X})"
        keyword = keyword_for_tag(tag) or where
        shared = raw_before[tag]
        other = raw_after.get(tag)
        if other is shared:                                           # the same element object: kept
            out.append(Change(where, keyword, shared.VR or "UN", "kept", shared, shared))
            continue
        if other is None:                                             # removed: no need to parse it
            out.append(Change(where, keyword, shared.VR or "UN", "removed", shared))
            continue
        elem, new = before[tag], after[tag]
        if elem.VR == "SQ":
            old_items, new_items = list(elem.value or ()), list(new.value or ())
            if len(old_items) != len(new_items):
                out.append(Change(where, keyword, "SQ", "replaced", elem, new))
            else:
                out.append(Change(where, keyword, "SQ", "kept", elem, new))
                for i, (a, b) in enumerate(zip(old_items, new_items)):
                    out.extend(diff(a, b, f"{where}[{i}]/"))
            continue
        if elem.value is new.value or elem.value == new.value:
            out.append(Change(where, keyword, elem.VR, "kept", elem, new))
            continue
        if new.value in (None, "", b""):
            action = "emptied"
        elif elem.VR == "UI":
            action = "uid-replaced"
        elif keyword in ("PatientID", "PatientName"):
            action = "pseudonymised"
        elif elem.VR in ("DA", "DT") and str(new.value)[:8].isdigit() and str(new.value)[:8] != "19000101":
            action = "shifted"
        else:
            action = "replaced"
        out.append(Change(where, keyword, elem.VR, action, elem, new))
    for tag in sorted(raw_after):
        if tag not in raw_before:
            elem = after[tag]
            where = f"{path}({tag.group:04X},{tag.element:04X})"
            out.append(Change(where, elem.keyword or where, elem.VR, "added", None, elem))
    return out


def _encode(ds: Dataset, where: str) -> bytes:
    ds.preamble = b"\x00" * 128                 # a source preamble may hold anything
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception as exc:  # pydicom raises many types for unencodable values
        raise MedsecError(f"{where}: de-identified instance cannot be written as DICOM ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None
    return buf.getvalue()


@dataclass(frozen=True)
class ExportSettings:
    """How to de-identify: profile, keys, burned-in handling."""

    profile: Profile
    keys: DeidKeys
    mask_rules: tuple[MaskRule, ...] = ()
    allow_burned_in: bool = False
    accept_leaks_in: frozenset[int] = frozenset()


def element_tag(hit: str) -> int:
    """The tag of the element a leak-scanner hit names (its last path step)."""
    group, elem = re.findall(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", hit)[-1]
    return int(group + elem, 16)


def parse_tag(text: str) -> int:
    """A tag from a keyword (``Manufacturer``) or ``gggg,eeee`` / ``(gggg,eeee)``; ValueError otherwise."""
    m = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?", text.strip())
    if m:
        return int(m.group(1) + m.group(2), 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise ValueError(f"{text!r} is not a DICOM keyword or a gggg,eeee tag")
    return tag


def deidentify_instance(name: str, ds: Dataset, settings: ExportSettings,
                        report: ExportReport, keep_changes: bool = False) -> Dataset:
    """One instance: burned-in check and masking, de-identification, leak scan; adds to ``report``.

    Raises BurnedInError for a flagged instance no rule masked (unless allowed) and LeakError if
    an identifying value of the original remains anywhere in the result.
    """
    reason = burned_in_reason(ds)
    work = ds
    if reason is not None:
        work = copy.deepcopy(ds)               # masking replaces pixel data: never the caller's
        rule = mask_burned_in(work, settings.mask_rules, name) if settings.mask_rules else None
        if rule is not None:
            report.burned_in.append({"instance": name, "reason": reason, "outcome": f"masked by rule {rule!r}"})
        elif settings.allow_burned_in:
            report.burned_in.append({"instance": name, "reason": reason, "outcome": "exported unmasked (override)"})
        else:
            raise BurnedInError(f"{name}: may carry burned-in text ({reason}); add a --mask-rules rule that "
                                "masks it, leave it out, or override with --allow-burned-in (audited)")
    needles = identifying_values(ds)          # first: parses the original's elements once, for both
    out = deidentify(work, settings.profile, settings.keys, identifying=needles)
    hits = find_leaks(out, needles)
    accepted = [h for h in hits if element_tag(h) in settings.accept_leaks_in]
    report.accepted_leaks.extend({"instance": os.path.basename(name), "element": h} for h in accepted)
    hits = [h for h in hits if h not in accepted]
    if hits:
        report.leak_hits += len(hits)
        raise LeakError(f"{name}: identifying value(s) of the original remain after de-identification at "
                        f"{', '.join(hits[:5])}{' ...' if len(hits) > 5 else ''}; nothing was written")
    report.instances += 1
    report.add(diff(ds, out), keep_changes)
    return out


def _deidentified(items: Iterable[tuple[str, Dataset]], settings: ExportSettings, report: ExportReport,
                  total: int, progress: bool, keep_changes: bool) -> Iterator[tuple[str, Dataset]]:
    bar = tqdm(total=total, unit="file", desc="de-identify", disable=None if progress else True)
    try:
        for name, ds in items:
            yield name, deidentify_instance(name, ds, settings, report, keep_changes)
            bar.update()
    finally:
        bar.close()


def _out_name(ds: Dataset) -> str | None:
    return f"{ds.SOPInstanceUID}.dcm" if "SOPInstanceUID" in ds else None


def export_instances(items: Iterable[tuple[str, Dataset]], total: int, output: str | os.PathLike | None,
                     settings: ExportSettings, *, recipients: Iterable[Any] = (), passphrase: Any = None,
                     dry_run: bool = False, progress: bool = True) -> ExportReport:
    """De-identify ``total`` (name, dataset) pairs and write them to ``output``: a new folder of
    ``<new SOP Instance UID>.dcm`` files, or, given ``recipients`` or a ``passphrase``, a new
    container (plaintext never on disk). ``dry_run`` writes nothing and keeps the per-element diff."""
    recipients = list(recipients)
    encrypt = bool(recipients) or passphrase is not None
    report = ExportReport(sorted(settings.profile.options), output=None if dry_run else str(output),
                          encrypted=encrypt, dry_run=dry_run)
    stream = _deidentified(items, settings, report, total, progress, keep_changes=dry_run)
    if dry_run:
        for _ in stream:
            pass
        return report
    if output is None:
        raise MedsecError("an output (folder or .msec container) is required unless this is a dry run")
    output = Path(output)
    if encrypt:
        def split() -> Iterator[SourceInstance]:
            studies: set[str] = set()
            for n, (name, ds) in enumerate(stream):
                studies.add(str(ds.get("StudyInstanceUID", "")))
                if len(studies) > 1:
                    raise MedsecError(f"{name}: belongs to another study than the first instance "
                                      "(a container holds one study; export each study separately)")
                yield split_instance(_encode(ds, name), _out_name(ds) or f"instance{n:06d}.dcm", name)
        write_container(output, split(), total, recipients, passphrase, progress=False)
        return report
    try:
        with atomic_dir(output) as tmp:
            for name, ds in stream:
                target = tmp / (_out_name(ds) or f"instance{report.instances:06d}.dcm")
                if target.exists():
                    raise MedsecError(f"{name}: two instances map to the same new SOP Instance UID (duplicate source)")
                with open(target, "wb") as fh:
                    fh.write(_encode(ds, name))
                    os.fsync(fh.fileno())
    except FileExistsError as exc:
        raise OutputError(str(exc)) from None
    except OSError as exc:
        raise OutputError(f"{output}: cannot write ({exc.strerror or exc}); nothing was left behind") from None
    return report

