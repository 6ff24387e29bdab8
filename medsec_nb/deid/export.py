"""De-identified export of a set of instances: de-identify, mask, scan, report, write atomically.

The audited entry points (purpose, policy, audit record) are in ``medsec_nb.study.export``; this
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from tqdm.auto import tqdm

from ..container.sources import SourceInstance, split_instance
from ..container.writer import write_container
from ..core.atomic import atomic_dir
from ..core.errors import MedsecError, OutputError
from ..core.reading import reading
from ..keys.identity import Identity, Passphrase, Recipient
from . import table
from .engine import Profile, deidentify
from .keyed import DeidKeys
from .pixels import BurnedInError, MaskRule, burned_in_reason, mask_burned_in
from .scan import Leak, identifying_sources, scan_leaks

#: Elements whose values are compared by length only (bulk data).
_BULK = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: Implementation Class UID (0002,0012) of the files medsec-nb writes: a UUID-derived UID (PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.134603914764355729402837843927910535376"
#: File Meta elements holding medsec-nb's constants above: a hit there is a coincidence (a short
#: numeric ID inside the UID's digits), never a value of the original.
_OWN_META = frozenset({"(0002,0012) UI", "(0002,0013) SH"})
#: Hits listed in a LeakError (the rest are counted).
_SHOWN_HITS = 5


def implementation_version_name() -> str:
    """Implementation Version Name (0002,0013) of the files medsec-nb writes (SH: at most 16)."""
    from ..core.version import __version__

    return f"MEDSEC_NB_{__version__}"[:16]


class LeakError(MedsecError):
    """A de-identified output still holds an identifying value of its original; nothing was written."""


@dataclass(frozen=True)
class Change:
    """One element's fate in one instance; its display redacts every value that was changed."""

    path: str
    keyword: str
    vr: str
    action: str  # kept | removed | replaced | emptied | uid-replaced | shifted | pseudonymised | added
    old: pydicom.DataElement | RawDataElement | None = field(default=None, repr=False)
    new: pydicom.DataElement | RawDataElement | None = field(default=None, repr=False)

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
    actions: Counter[str] = field(default_factory=Counter)
    attributes: dict[str, Counter[str]] = field(default_factory=dict)
    private_removed: int = 0
    burned_in: list[dict[str, str]] = field(default_factory=list)
    leak_hits: int = 0
    accepted_leaks: list[dict[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # filled for dry runs only

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
        by_rule: dict[str, Counter[str]] = {}
        for keyword, counts in self.attributes.items():
            row = next((r for r in table.rows() if r.keyword == keyword), None)
            if row is not None:
                by_rule.setdefault(row.basic, Counter()).update(counts)
        return {
            "standard": f"DICOM PS3.15 {table.EDITION} Table E.1-1 (Basic Profile), Table E.3.4-1 and E.3.10-1 (2023b)",
            "profile": ["basic", *self.profile],
            "instances": self.instances,
            "output": self.output,
            "encrypted": self.encrypted,
            "dry_run": self.dry_run,
            "actions": dict(sorted(self.actions.items())),
            "by_basic_profile_code": {k: dict(sorted(v.items())) for k, v in sorted(by_rule.items())},
            "attributes": {k: dict(sorted(v.items())) for k, v in sorted(self.attributes.items())},
            "private_elements_removed": self.private_removed,
            "burned_in": self.burned_in,
            "leak_scan": {"instances_scanned": self.instances, "hits": self.leak_hits, "accepted": self.accepted_leaks},
        }

    def summary(self) -> str:
        """A short human summary."""
        verb = "would de-identify" if self.dry_run else "de-identified"
        where = (
            "" if self.dry_run or not self.output else f" -> {self.output}" + (" (encrypted)" if self.encrypted else "")
        )
        lines = [f"{verb} {self.instances} instance(s){where}; profile basic" + "".join(f" +{o}" for o in self.profile)]
        lines.append(
            "  "
            + ", ".join(f"{n} {a}" for a, n in sorted(self.actions.items()) if a != "kept")
            + f"; {self.actions.get('kept', 0)} kept"
        )
        changed = sorted((k for k, v in self.attributes.items() if set(v) - {"kept"}))
        if changed:
            lines.append(
                f"  attributes changed ({len(changed)}): "
                + ", ".join(changed[:12])
                + (", ..." if len(changed) > 12 else "")
            )
        if self.private_removed:
            lines.append(f"  private elements removed: {self.private_removed}")
        for b in self.burned_in:
            lines.append(f"  burned-in: {b['instance']}: {b['reason']} -> {b['outcome']}")
        lines.append(
            f"  leak scan: {self.instances} output(s) scanned, {self.leak_hits} hit(s)"
            + (f", {len(self.accepted_leaks)} accepted by --accept-leak-in" if self.accepted_leaks else "")
        )
        return "\n".join(lines)

    def diff_lines(self) -> list[str]:
        """The dry-run diff: one line per changed element, identifying values redacted."""
        return [
            f"{c.path:<28} {c.keyword or '?':<34} {c.action:<13} {c.before} -> {c.after}"
            for c in self.changes
            if c.action != "kept"
        ]


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
    raw_before, raw_after = dict(before.items()), dict(after.items())  # elements as stored: no parsing
    for tag in sorted(raw_before):
        where = f"{path}({tag.group:04X},{tag.element:04X})"
        keyword = keyword_for_tag(tag) or where
        shared = raw_before[tag]
        other = raw_after.get(tag)
        if other is shared:  # the same element object: kept
            out.append(Change(where, keyword, shared.VR or "UN", "kept", shared, shared))
            continue
        if other is None:  # removed: no need to parse it
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
    ds.preamble = b"\x00" * 128  # a source preamble may hold anything
    buf = io.BytesIO()
    try:
        with reading(where):
            ds.save_as(buf, enforce_file_format=True)
    except Exception as exc:  # pydicom raises many types for unencodable values
        raise MedsecError(
            f"{where}: de-identified instance cannot be written as DICOM ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return buf.getvalue()


@dataclass(frozen=True)
class ExportSettings:
    """How to de-identify: profile, keys, burned-in handling."""

    profile: Profile
    keys: DeidKeys
    mask_rules: tuple[MaskRule, ...] = ()
    allow_burned_in: bool = False
    accept_leaks_in: frozenset[int] = frozenset()  # elements where any hit is accepted
    accept_leak_pairs: frozenset[tuple[int, int]] = frozenset()  # (element, original attribute) accepted

    def accepts(self, leak: Leak) -> bool:
        """Whether an override lets ``leak`` through: its element is accepted, or the element with
        every original attribute whose value it holds."""
        if leak.tag in self.accept_leaks_in:
            return True
        return bool(leak.originals) and all(
            (leak.tag, tag_for_keyword(k)) in self.accept_leak_pairs for k in leak.originals
        )


def parse_accept(text: str) -> int | tuple[int, int]:
    """An ``--accept-leak-in`` value: ``ELEMENT`` (any hit in it) or ``ELEMENT:ORIGINAL`` (only the
    values of that original attribute), each a keyword or a tag; ValueError otherwise."""
    element, sep, original = text.partition(":")
    return (parse_tag(element), parse_tag(original)) if sep else parse_tag(element)


def _described(leak: Leak, names: dict[str, str]) -> str:
    originals = " and ".join(names.get(k, k) for k in leak.originals) or "an identifying attribute"
    return f"the value of {originals} inside {leak.keyword} {leak.where}"


def _leak_error(name: str, leaks: list[Leak]) -> LeakError:
    """One line: which original attribute's value is in which output element, and the overrides."""
    names = {
        k: f"{k} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
        for leak in leaks
        for k in leak.originals
        if (tag := tag_for_keyword(k)) is not None
    }
    shown = leaks[:_SHOWN_HITS]
    hits = "; ".join(_described(leak, names) for leak in shown)
    more = f"; and {len(leaks) - len(shown)} more" if len(leaks) > len(shown) else ""
    overrides = (
        " ".join(dict.fromkeys(f"--accept-leak-in {leak.keyword}:{k}" for leak in shown for k in leak.originals))
        or "--accept-leak-in ELEMENT"
    )
    return LeakError(
        f"{name}: the de-identified output still holds {hits}{more} (values not shown); nothing was "
        f"written. If these values may stay, re-run with {overrides} (audited)"
    )


def parse_tag(text: str) -> int:
    """A tag from a keyword (``Manufacturer``) or ``gggg,eeee`` / ``(gggg,eeee)``; ValueError otherwise."""
    m = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?", text.strip())
    if m:
        return int(m.group(1) + m.group(2), 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise ValueError(f"{text!r} is not a DICOM keyword or a gggg,eeee tag")
    return tag


def deidentify_instance(
    name: str, ds: Dataset, settings: ExportSettings, report: ExportReport, keep_changes: bool = False
) -> Dataset:
    """One instance: burned-in check and masking, de-identification, leak scan; adds to ``report``.

    Raises BurnedInError for a flagged instance no rule masked (unless allowed) and LeakError if
    an identifying value of the original remains anywhere in the result.
    """
    reason = burned_in_reason(ds)
    work = ds
    if reason is not None:
        work = copy.deepcopy(ds)  # masking replaces pixel data: never the caller's
        rule = mask_burned_in(work, settings.mask_rules, name) if settings.mask_rules else None
        if rule is not None:
            report.burned_in.append({"instance": name, "reason": reason, "outcome": f"masked by rule {rule!r}"})
        elif settings.allow_burned_in:
            report.burned_in.append({"instance": name, "reason": reason, "outcome": "exported unmasked (override)"})
        else:
            raise BurnedInError(
                f"{name}: may carry burned-in text ({reason}); add a --mask-rules rule that "
                "masks it, leave it out, or override with --allow-burned-in (audited)"
            )
    sources = identifying_sources(ds)  # first: parses the original's elements once, for both
    out = deidentify(work, settings.profile, settings.keys, identifying=list(sources))
    _written_by_medsec(out)
    leaks = [leak for leak in scan_leaks(out, sources) if leak.where not in _OWN_META]
    report.accepted_leaks.extend(
        {"instance": os.path.basename(name), "element": leak.where, "original": ", ".join(leak.originals)}
        for leak in leaks
        if settings.accepts(leak)
    )
    leaks = [leak for leak in leaks if not settings.accepts(leak)]
    if leaks:
        report.leak_hits += len(leaks)
        raise _leak_error(name, leaks)
    report.instances += 1
    report.add(diff(ds, out), keep_changes)
    return out


def _written_by_medsec(ds: Dataset) -> None:
    """A de-identified file is a new file written by medsec-nb (PS3.10 7.1): its File Meta names
    medsec-nb's implementation, not the source's (whose version name may name a site)."""
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = implementation_version_name()


def _deidentified(
    items: Iterable[tuple[str, Dataset]],
    settings: ExportSettings,
    report: ExportReport,
    total: int,
    progress: bool,
    keep_changes: bool,
) -> Iterator[tuple[str, Dataset]]:
    bar = tqdm(total=total, unit="file", desc="de-identify", disable=None if progress else True)
    try:
        for name, ds in items:
            with reading(name):
                out = deidentify_instance(name, ds, settings, report, keep_changes)
            yield name, out
            bar.update()
    finally:
        bar.close()


def _out_name(ds: Dataset) -> str | None:
    return f"{ds.SOPInstanceUID}.dcm" if "SOPInstanceUID" in ds else None


def deidentify_to_memory(
    items: Iterable[tuple[str, Dataset]],
    total: int,
    settings: ExportSettings,
    *,
    destination: str,
    progress: bool = True,
) -> tuple[ExportReport, list[bytes]]:
    """De-identify ``total`` (name, dataset) pairs into DICOM file bytes in memory, to be sent to
    ``destination`` (named in the report). Every instance passes the burned-in check and the leak
    scan before anything is returned: a hit raises, so nothing can be sent."""
    report = ExportReport(sorted(settings.profile.options), output=destination)
    out: list[bytes] = []
    sops: set[str] = set()
    for name, ds in _deidentified(items, settings, report, total, progress, keep_changes=False):
        sop = str(ds.get("SOPInstanceUID", ""))
        if sop in sops:
            raise MedsecError(f"{name}: two instances map to the same new SOP Instance UID (duplicate source)")
        sops.add(sop)
        out.append(_encode(ds, name))
    return report, out


def export_instances(
    items: Iterable[tuple[str, Dataset]],
    total: int,
    output: str | os.PathLike[str] | None,
    settings: ExportSettings,
    *,
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]] = (),
    passphrase: Passphrase = None,
    dry_run: bool = False,
    progress: bool = True,
) -> ExportReport:
    """De-identify ``total`` (name, dataset) pairs and write them to ``output``: a new folder of
    ``<new SOP Instance UID>.dcm`` files, or, given ``recipients`` or a ``passphrase``, a new
    container (plaintext never on disk). ``dry_run`` writes nothing and keeps the per-element diff."""
    recipients = list(recipients)
    encrypt = bool(recipients) or passphrase is not None
    report = ExportReport(
        sorted(settings.profile.options), output=None if dry_run else str(output), encrypted=encrypt, dry_run=dry_run
    )
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
                    raise MedsecError(
                        f"{name}: belongs to another study than the first instance "
                        "(a container holds one study; export each study separately)"
                    )
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
