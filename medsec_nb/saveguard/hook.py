"""Notebook save guard: a ContentsManager pre-save hook that keeps identifying values out of saved notebooks.

Every string of every cell output (dictionary keys of JSON payloads included; every text MIME type,
SVG included; the text chunks of PNG images) and of the saved widget state is tokenised, as written
and again with ANSI colour codes removed and HTML character references decoded; a multi-line string
stored as a list of lines is read as one text. Runs of tokens whose keyed fingerprint matches one
published by a kernel for an open study (``medsec_nb.saveguard.fingerprints``) are replaced with a marker
(``SaveGuard.mode = "redact"``, the default; a PNG text chunk holding one is dropped) or the save is
refused (``"block"``). Each intervention is an audit record naming the notebook and the number of
values, never a value. If the guard itself fails, the save is refused (it never lets an unchecked
notebook through).
"""

from __future__ import annotations

import base64
import binascii
import copy
import html
import re
import zlib
from bisect import bisect_right
from typing import Any

from tornado.web import HTTPError
from traitlets import Bool, Enum, Unicode
from traitlets.config import Configurable

from ..access.gate import EVENT_SECURITY
from ..audit import AuditLog
from ..core.errors import MedsecError
from .fingerprints import Fingerprints, fingerprint, guard_key, load_published, tokens

MARKER = "\u2588 redacted by medsec save guard"
#: A DICOM UID as it appears in text: 1.x or 2.x, 3+ numeric components, 20+ characters in all
#: (instance UIDs; version numbers and addresses are shorter or start otherwise).
_UID = re.compile(r"(?<![\w.])[12]\.(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*)){1,}(?!\w|\.\d)")
_UID_MIN_LEN = 20
_STANDARD_UID = "1.2.840.10008."  # SOP classes, transfer syntaxes: public, not identifying
#: ANSI control sequences (colours, cursor moves: ESC [ or CSI, parameters, final byte) and HTML
#: character references (``&#x27;``, ``&#39;``, ``&apos;``), undone in a second view of each text.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|&(?:#[xX][0-9a-fA-F]{1,6}|#\d{1,7}|[A-Za-z][A-Za-z0-9]{1,31});?"
)
#: Base64 payloads (not text): left alone, except PNG text chunks. ``+xml``/``+json`` types are text.
_BINARY_TYPES = ("image/", "audio/", "video/", "font/")
_BINARY = frozenset({"application/pdf", "application/octet-stream", "application/zip", "application/gzip"})
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
#: Largest decompressed PNG text chunk read; a larger or corrupt one counts as a value (dropped).
_PNG_TEXT_MAX = 1 << 20

Span = tuple[int, int]


def is_binary(mime: str) -> bool:
    """Whether outputs of MIME type ``mime`` are base64 data rather than text (SVG is text)."""
    mime = mime.lower()
    return mime in _BINARY or (mime.startswith(_BINARY_TYPES) and not mime.endswith(("+xml", "+json")))


class _View:
    """``text`` with ANSI control sequences removed and HTML character references decoded, and the
    way back from its positions to the original's."""

    def __init__(self, text: str, matches: list[re.Match]):
        parts: list[str] = []
        #: (start in the view, start and end in the original, copied verbatim?), in order
        self.pieces: list[tuple[int, int, int, bool]] = []
        pos = at = 0
        for m in matches:
            escape = m.group()
            repl = "" if escape[0] in "\x1b\x9b" else html.unescape(escape)
            if repl == escape:
                continue
            if m.start() > pos:
                self.pieces.append((at, pos, m.start(), True))
                parts.append(text[pos : m.start()])
                at += m.start() - pos
            if repl:
                self.pieces.append((at, m.start(), m.end(), False))
                parts.append(repl)
                at += len(repl)
            pos = m.end()
        if pos < len(text):
            self.pieces.append((at, pos, len(text), True))
            parts.append(text[pos:])
        self.text = "".join(parts)
        self._starts = [p[0] for p in self.pieces]

    def original(self, span: Span) -> Span:
        """The span of the original text that ``span`` of the view comes from."""
        first = self.pieces[bisect_right(self._starts, span[0]) - 1]
        last = self.pieces[bisect_right(self._starts, span[1] - 1) - 1]
        start = first[1] + span[0] - first[0] if first[3] else first[1]
        end = last[1] + span[1] - last[0] if last[3] else last[2]
        return start, end


def _view(text: str) -> _View | None:
    """The unescaped view of ``text``, or None if it has nothing to undo."""
    if "\x1b" not in text and "\x9b" not in text and "&" not in text:
        return None
    matches = list(_ESCAPE.finditer(text))
    view = _View(text, matches) if matches else None
    return view if view is not None and view.text != text else None


def _replace(text: str, spans: list[Span], marker: str) -> tuple[str, int]:
    """``text`` with the union of ``spans`` replaced by ``marker`` (overlapping spans merged)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + marker + text[end:]
    return text, len(merged)


def _uid_spans(text: str) -> list[Span]:
    return [
        m.span()
        for m in _UID.finditer(text)
        if len(m.group()) >= _UID_MIN_LEN and not m.group().startswith(_STANDARD_UID)
    ]


class Matcher:
    """Finds runs of tokens whose fingerprint is in ``fps``; fingerprints computed once per distinct run."""

    def __init__(self, fps: Fingerprints, key: bytes, marker: str = MARKER, uids: bool = False):
        self.fps, self.key, self.marker, self.uids = fps, key, marker, uids
        self.lengths = sorted(fps.lengths, reverse=True)
        self._first: dict[str, bool] = {}
        self._full: dict[tuple[str, ...], bool] = {}

    def _is_first(self, tok: str) -> bool:
        hit = self._first.get(tok)
        if hit is None:
            hit = self._first[tok] = fingerprint(self.key, (tok,)) in self.fps.first
        return hit

    def _is_value(self, run: tuple[str, ...]) -> bool:
        hit = self._full.get(run)
        if hit is None:
            hit = self._full[run] = fingerprint(self.key, run) in self.fps.full
        return hit

    def spans(self, text: str) -> list[Span]:
        """Spans of ``text`` holding a value (and, with ``uids``, a DICOM-looking instance UID)."""
        found = _uid_spans(text) if self.uids else []
        if not self.fps.full:
            return found
        toks = tokens(text)
        words = [t for t, _, _ in toks]
        end = -1
        for i, (tok, start, _) in enumerate(toks):
            if start < end or not self._is_first(tok):
                continue
            for n in self.lengths:  # the longest match first
                if i + n <= len(toks) and self._is_value(tuple(words[i : i + n])):
                    end = toks[i + n - 1][2]
                    found.append((start, end))
                    break
        return found

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with every matching run, as written or once escapes are undone, replaced by the
        marker; and how many runs."""
        spans = self.spans(text)
        view = _view(text)
        if view is not None:
            spans += [view.original(span) for span in self.spans(view.text)]
        return _replace(text, spans, self.marker) if spans else (text, 0)


def redact_uids(text: str, marker: str = MARKER) -> tuple[str, int]:
    """``text`` with every DICOM-looking instance UID (not a standard 1.2.840.10008 UID) replaced."""
    return _replace(text, _uid_spans(text), marker)


def redact_text(text: str, fps: Fingerprints, key: bytes, marker: str = MARKER) -> tuple[str, int]:
    """``text`` with every run of tokens matching ``fps`` replaced by ``marker``; and how many runs."""
    return Matcher(fps, key, marker).redact(text)


class _Guard:
    """One notebook's walk: redacts every string it is given, keys included, and counts."""

    def __init__(self, matcher: Matcher):
        self.matcher, self.count = matcher, 0

    def text(self, text: str) -> str:
        text, n = self.matcher.redact(text)
        self.count += n
        return text

    def multiline(self, value: Any) -> Any:
        """An nbformat multi-line string (a string or a list of lines), read as one text."""
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return self.text("".join(value)).splitlines(keepends=True)
        return self.walk(value)

    def walk(self, value: Any) -> Any:
        """Every string of a JSON value, dictionary keys included (base64 payloads left alone)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = self.text(k) if isinstance(k, str) else k
            while key in out:  # two keys redacted alike: keep both values
                key += "\u2588"
            out[key] = (
                self.mime(k, v) if isinstance(k, str) and is_binary(k) else (v if k == "buffers" else self.walk(v))
            )
        return out

    def mime(self, mime: str, body: Any) -> Any:
        """The payload of one MIME type of an output."""
        if is_binary(mime):
            return self.png(body) if mime.lower() == "image/png" and isinstance(body, (str, list)) else body
        if mime.lower() == "application/json" or mime.lower().endswith("+json"):
            return self.walk(body)
        return self.multiline(body)

    def output(self, output: Any) -> Any:
        """One cell output: its MIME bundle by type, stream text as one text, everything else walked."""
        if not isinstance(output, dict):
            return self.walk(output)
        out: dict[str, Any] = {}
        for k, v in output.items():
            if k == "data" and isinstance(v, dict):
                out[k] = {mime: self.mime(mime, body) for mime, body in v.items()}
            elif k == "text":
                out[k] = self.multiline(v)
            elif k == "output_type":
                out[k] = v
            else:
                out[k] = self.walk(v)
        return out

    def png(self, body: str | list) -> Any:
        """A base64 PNG without its text chunks that hold a value (or cannot be read); pixels are not read."""
        try:
            data = base64.b64decode("".join(body) if isinstance(body, list) else body)
        except (binascii.Error, TypeError, ValueError):
            return body
        if not data.startswith(_PNG):
            return body
        kept, pos, dropped = [data[:8]], 8, False
        while pos + 12 <= len(data):
            size = int.from_bytes(data[pos : pos + 4], "big")
            end = pos + 12 + size
            if end > len(data):
                break
            if data[pos + 4 : pos + 8] in _PNG_TEXT and self._png_text_has_value(
                data[pos + 4 : pos + 8], data[pos + 8 : end - 4]
            ):
                dropped = True
            else:
                kept.append(data[pos:end])
            pos = end
        if not dropped:
            return body
        text = "".join(body) if isinstance(body, list) else body
        return base64.b64encode(b"".join(kept) + data[pos:]).decode("ascii") + ("\n" if text.endswith("\n") else "")

    def _png_text_has_value(self, kind: bytes, data: bytes) -> bool:
        keyword, _, rest = data.partition(b"\x00")
        try:
            if kind == b"tEXt":
                text = rest.decode("latin-1")
            elif kind == b"zTXt":
                text = _inflate(rest[1:]).decode("latin-1")
            else:  # iTXt: flag, method, language, translated keyword, text
                translated, _, body = rest[2:].partition(b"\x00")[2].partition(b"\x00")
                body = _inflate(body) if rest[:1] == b"\x01" else body
                text = f"{translated.decode('utf-8', 'replace')} {body.decode('utf-8', 'replace')}"
        except (zlib.error, ValueError):
            self.count += 1  # unreadable: not checked, so not kept
            return True
        before = self.count
        self.text(f"{keyword.decode('latin-1')} {text}")
        return self.count > before


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, _PNG_TEXT_MAX)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("PNG text chunk too large or truncated")
    return out


def guard_notebook(nb: dict[str, Any], fps: Fingerprints, key: bytes, marker: str = MARKER, uids: bool = True) -> int:
    """Redact, in place, every output of ``nb`` (nbformat JSON) and its saved widget state: values
    matching ``fps`` and, with ``uids``, any DICOM-looking instance UID; return how many."""
    guard = _Guard(Matcher(fps, key, marker, uids))
    for cell in nb.get("cells") or ():
        if isinstance(cell, dict) and cell.get("outputs"):
            outputs = cell["outputs"]
            cell["outputs"] = [guard.output(o) for o in outputs] if isinstance(outputs, list) else guard.walk(outputs)
    meta = nb.get("metadata")
    if isinstance(meta, dict) and "widgets" in meta:
        meta["widgets"] = guard.walk(meta["widgets"])
    return guard.count


class SaveGuard(Configurable):
    """The pre-save hook (``c.SaveGuard.mode = "block"`` refuses saves instead of redacting)."""

    mode = Enum(
        ("redact", "block"),
        default_value="redact",
        help="redact: replace identifying values in outputs with the marker; block: refuse the save.",
    ).tag(config=True)
    marker = Unicode(MARKER, help="Text that replaces an identifying value.").tag(config=True)
    uids = Bool(
        True,
        help="While a study is open, also replace any DICOM-looking instance UID (not 1.2.840.10008.*) in outputs.",
    ).tag(config=True)

    def pre_save(self, model: dict[str, Any], path: str, contents_manager: Any = None, **kwargs: Any) -> None:
        """ContentsManager pre-save hook: redact (or refuse) a notebook about to be saved."""
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        try:
            fps = load_published()
            if not fps.full:
                return
            content = model["content"]
            if self.mode == "block":
                found = guard_notebook(_copy(content), fps, guard_key(), self.marker, self.uids)
            else:
                found = guard_notebook(content, fps, guard_key(), self.marker, self.uids)
            if found:
                self._record(path, found)
        except Exception as exc:  # fail closed: jupyter_server would save anyway on other errors
            what = str(exc) if isinstance(exc, MedsecError) else type(exc).__name__
            raise HTTPError(500, f"medsec save guard could not check {path}; not saved: {what}") from None
        if found and self.mode == "block":
            raise HTTPError(
                409,
                f"medsec save guard: {path} not saved: {found} identifying value(s) of an "
                "open study in its outputs; clear those outputs and save again",
            )

    def _record(self, path: str, found: int) -> None:
        AuditLog().append(
            action="save-guard",
            outcome="denied" if self.mode == "block" else "success",
            event=EVENT_SECURITY,
            purpose="HOPERAT",
            detail={"notebook": path, "values": found, "mode": self.mode},
        )


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)


def register(serverapp: Any) -> SaveGuard:
    """Make a SaveGuard from the server's config and register its hook with the contents manager."""
    guard = SaveGuard(parent=serverapp)
    serverapp.contents_manager.register_pre_save_hook(guard.pre_save)
    serverapp.web_app.settings["medsec_save_guard"] = guard
    return guard
