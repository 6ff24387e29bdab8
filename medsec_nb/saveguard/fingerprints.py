"""What the notebook save guard looks for: keyed fingerprints of the identifying values of open studies.

A kernel that opens a study publishes keyed fingerprints (BLAKE2s MAC with a per-user secret,
``<data dir>/save-guard.key``, 0600) of the normalised token sequences of its identifying
values (names in several orders, IDs, dates in several formats, study and series UIDs) to
``<data dir>/runtime/guard/<pid>.json`` (0600, written atomically), and withdraws them when the
study is closed or the process exits. The values themselves are never written. The Jupyter
server's pre-save hook (``medsec_nb.saveguard.hook``) tokenises notebook outputs the same
way and compares fingerprints of token runs.

Only kernels publish: a value opened in another process (a script, the CLI, a cohort worker)
cannot reach a notebook saved through the server. ``MEDSEC_SAVE_GUARD_PUBLISH=1`` makes any
process publish (``0``: none, kernels included). Values are read from the first instance header
of the study (and the series UIDs from its index) on a background thread half a second after it
is opened, off the open-and-load path (about 2 ms, then the file is written); :func:`wait` joins it.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import re
import secrets
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from Crypto.Hash import BLAKE2s
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import PersonName

from ..core import runtime
from ..core.errors import MedsecError
from ..core.jupyter import in_kernel
from ..core.runtime import data_dir, write_once
from ..deid.scan import IDENTIFYING_KEYWORDS, MIN_LEN

#: Elements whose values are guarded, besides the leak scanner's identifying keywords.
GUARDED_KEYWORDS = frozenset(IDENTIFYING_KEYWORDS) | {
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "PatientBirthTime",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "MilitaryRank",
    "MedicalRecordLocator",
    "PatientInsurancePlanCodeSequence",
}
_DATE_VRS = ("DA", "DT")
KIND = "guard"  # runtime files: <data dir>/runtime/guard/<pid>.json
_TOKEN = re.compile(r"[^\W_]+")
#: The same, where a digit run is cut before an ISO 8601 ``T`` (``1970-02-03T00:00``), which is no
#: token (slower: used only in texts where a digit, a ``T`` and a digit meet).
_TOKEN_ISO = re.compile(r"\d+(?=[Tt]\d)|(?!(?<=\d)[Tt]\d)[^\W_]+")
_ISO_T = re.compile(r"\d[Tt]\d")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_FP_BYTES = 16
FORMAT = 1


def key_path() -> Path:
    return data_dir() / "save-guard.key"


def guard_key() -> bytes:
    """The per-user fingerprint key (32 random bytes, created 0600 on first use)."""
    path = key_path()
    if not path.exists():
        write_once(path, secrets.token_bytes(32), 0o600)
    key = path.read_bytes()
    if len(key) != 32:
        raise MedsecError(f"{path}: save guard key must be 32 bytes; remove the file to make a new one")
    return key


@lru_cache(maxsize=1 << 16)
def _norm(token: str) -> str:
    token = token.casefold()
    return str(int(token)) if token.isdigit() and len(token) < 40 else token


def tokens(text: str) -> list[tuple[str, int, int]]:
    """(normalised token, start, end) for each run of letters or digits of ``text`` (the date of an
    ISO date-time is tokens of its own)."""
    pattern = _TOKEN_ISO if _ISO_T.search(text) else _TOKEN
    return [(_norm(m.group()), m.start(), m.end()) for m in pattern.finditer(text)]


def _toks(text: str) -> tuple[str, ...]:
    return tuple(t for t, _, _ in tokens(text))


def _date_variants(text: str) -> set[tuple[str, ...]]:
    try:
        d = dt.datetime.strptime(text.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return {_toks(text)}
    y, m, day = str(d.year), str(d.month), str(d.day)
    full, short = _MONTHS[d.month - 1], _MONTHS[d.month - 1][:3]
    out = {(d.strftime("%Y%m%d"),), (y, m, day), (day, m, y), (m, day, y)}
    for mon in {full, short}:
        out |= {(day, mon, y), (mon, day, y), (y, mon, day)}
    return {tuple(_norm(t) for t in v) for v in out}


def _name_variants(value: PersonName) -> set[tuple[str, ...]]:
    parts = [_toks(p) for p in (value.family_name, value.given_name, value.middle_name)]
    family, given, middle = parts
    out = {_toks(str(value)), family + given + middle, given + middle + family, given + family, family + given}
    out |= {p for p in parts if p}  # each part alone ("Doe", "John")
    out |= {("".join(p),) for p in parts if len(p) > 1}  # a part written without its punctuation ("OBrien")
    return out


def value_variants(elem: pydicom.DataElement) -> set[tuple[str, ...]]:
    """Normalised token sequences under which ``elem``'s value may appear in an output."""
    values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
    out: set[tuple[str, ...]] = set()
    for v in values:
        if v is None or v == "":
            continue
        if elem.VR == "PN":
            out |= _name_variants(v if isinstance(v, PersonName) else PersonName(str(v)))
        elif elem.VR in _DATE_VRS:
            out |= _date_variants(str(v))
        else:
            out.add(_toks(str(v)))
    return {v for v in out if v and len("".join(v)) >= MIN_LEN}


def identifying_variants(ds: pydicom.Dataset) -> set[tuple[str, ...]]:
    """Token sequences of every guarded value of ``ds``, at every depth."""
    out: set[tuple[str, ...]] = set()
    for elem in _guarded(ds):
        if elem.VR != "SQ":
            out |= value_variants(elem)
    return out


_GUARDED_TAGS = frozenset(t for t in map(tag_for_keyword, GUARDED_KEYWORDS) if t is not None)


@lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _guarded(ds: pydicom.Dataset) -> Iterator[pydicom.DataElement]:
    """The guarded elements of ``ds`` and of its sequence items; other elements are not even parsed."""
    for tag in list(ds.keys()):
        if tag in _GUARDED_TAGS:
            yield ds[tag]
        elif not tag.is_private and _is_sequence(tag):
            for item in ds[tag].value or ():
                yield from _guarded(item)


def fingerprint(key: bytes, toks: Iterable[str]) -> str:
    """Keyed fingerprint of a token sequence: BLAKE2s in its keyed (MAC) mode, 128 bits, hex
    (about five times faster than HMAC-SHA256 here, which matters when a large notebook is saved)."""
    return BLAKE2s.new(digest_bits=8 * _FP_BYTES, key=key, data="\x1f".join(toks).encode("utf-8")).hexdigest()


@dataclass
class Fingerprints:
    """Fingerprints of token sequences, of their first tokens, and the sequence lengths present."""

    full: set[str] = field(default_factory=set)
    first: set[str] = field(default_factory=set)
    lengths: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, key: bytes, variants: Iterable[tuple[str, ...]]) -> Fingerprints:
        fp = cls()
        variants = set(variants)
        fp.full = {fingerprint(key, v) for v in variants}
        fp.first = {fingerprint(key, (t,)) for t in {v[0] for v in variants}}
        fp.lengths = {len(v) for v in variants}
        return fp

    def update(self, other: Fingerprints) -> None:
        self.full |= other.full
        self.first |= other.first
        self.lengths |= other.lengths

    def as_json(self) -> dict[str, Any]:
        return {"full": sorted(self.full), "first": sorted(self.first), "lengths": sorted(self.lengths)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprints:
        return cls(set(data["full"]), set(data["first"]), {int(n) for n in data["lengths"]})


# -- publication by the process that opened studies ---------------------------------------------


@dataclass
class _Entry:
    token: str
    thread: threading.Timer | None = None
    withdrawn: bool = False
    ok: bool = False


_lock = threading.Lock()
_entries: weakref.WeakKeyDictionary[Any, _Entry] = weakref.WeakKeyDictionary()
_published: dict[str, dict[str, Any]] = {}


def runtime_file(pid: int | None = None) -> Path:
    return runtime.process_file(KIND, pid)


def _write() -> None:
    runtime.publish(KIND, {"v": FORMAT, "studies": _published} if _published else None)


def _fingerprints(study: Any) -> Fingerprints:
    variants = identifying_variants(study.series[0].header(0)) if study.series else set()
    for series in study.series:  # other series: same patient; their UIDs come from the index
        variants.add(_toks(series.uid))
    return Fingerprints.of(guard_key(), variants)


def _store(entry: _Entry, study: Any, path: str) -> None:
    try:
        fp = _fingerprints(study)
    except Exception as exc:  # an unparsable header (or a study closed at once): say so
        if not entry.withdrawn:
            warnings.warn(
                f"{path}: save guard cannot read its identifying values ({type(exc).__name__}); "
                "saved notebooks are not checked for them",
                RuntimeWarning,
                stacklevel=2,
            )
        return
    with _lock:
        if entry.withdrawn:
            return
        _published[entry.token] = fp.as_json()
        _write()
        entry.ok = True


def publishing() -> bool:
    """Whether this process publishes: a Jupyter kernel, unless ``$MEDSEC_SAVE_GUARD_PUBLISH`` says."""
    switch = os.environ.get("MEDSEC_SAVE_GUARD_PUBLISH", "")
    if switch in ("0", "1"):
        return switch == "1"
    return in_kernel()


#: Seconds between opening a study and publishing its fingerprints: off the open-and-load path
#: (a 300-slice load takes about 0.1 s), long before anyone saves what the cell shows.
PUBLISH_DELAY = 0.5


def publish(study: Any) -> None:
    """Publish the fingerprints of ``study``'s identifying values (in a kernel, see
    :func:`publishing`) from a background thread ``PUBLISH_DELAY`` seconds after the opening: one
    header decrypted and parsed, fingerprints computed (about 2 ms), the runtime file written."""
    if not publishing():
        return
    entry = _Entry(secrets.token_hex(8))
    with _lock:
        _entries[study] = entry
    entry.thread = threading.Timer(PUBLISH_DELAY, _store, args=(entry, study, study.path))
    entry.thread.name, entry.thread.daemon = "medsec-save-guard", True
    entry.thread.start()


def wait(study: Any, timeout: float | None = 30.0) -> bool:
    """Wait for ``study``'s publication; True if its fingerprints are published."""
    entry = _entries.get(study)
    if entry is None or entry.thread is None:
        return False
    entry.thread.join(timeout)
    return entry.ok and not entry.withdrawn


def withdraw(study: Any) -> None:
    """Withdraw ``study``'s fingerprints (when it is closed)."""
    with _lock:
        entry = _entries.pop(study, None)
        if entry is None:
            return
        entry.withdrawn = True
        if entry.thread is not None:
            entry.thread.cancel()
        if _published.pop(entry.token, None) is not None:
            _write()


@atexit.register
def _withdraw_all() -> None:
    with _lock:
        if _published:
            _published.clear()
            _write()


# -- reading by the server --------------------------------------------------------------------


def load_published() -> Fingerprints:
    """The union of every live process's published fingerprints (a dead process's file is
    removed: :func:`medsec_nb.core.runtime.read_published`); a malformed file raises MedsecError
    (the save guard then refuses the save rather than guess)."""
    out = Fingerprints()
    for data in runtime.read_published(KIND, strict=True):
        try:
            for study in data["studies"].values():
                out.update(Fingerprints.from_json(study))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MedsecError(
                f"{runtime.process_file(KIND, data.get('pid'))}: not a save guard fingerprint file; remove it if "
                "no kernel has a study open"
            ) from None
    return out
