"""Notebook save guard: a ContentsManager pre-save hook that keeps identifying values out of saved notebooks.

Every string of every cell output (and of the saved widget state) is tokenised; runs of tokens
whose keyed fingerprint matches one published by a kernel for an open study
(``medsec_nb.guard``) are replaced with a marker (``SaveGuard.mode = "redact"``, the default)
or the save is refused (``"block"``). Each intervention is an audit record naming the
notebook and the number of values, never a value. If the guard itself fails, the save is
refused (it never lets an unchecked notebook through).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from tornado.web import HTTPError
from traitlets import Bool, Enum, Unicode
from traitlets.config import Configurable

from ..access import EVENT_SECURITY
from ..audit import AuditLog
from ..errors import MedsecError
from ..guard import Fingerprints, fingerprint, guard_key, load_published, tokens

MARKER = "\u2588 redacted by medsec save guard"
#: A DICOM UID as it appears in text: 1.x or 2.x, 3+ numeric components, 20+ characters in all
#: (instance UIDs; version numbers and addresses are shorter or start otherwise).
_UID = re.compile(r"(?<![\w.])[12]\.(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*)){1,}(?!\w|\.\d)")
_UID_MIN_LEN = 20
_STANDARD_UID = "1.2.840.10008."      # SOP classes, transfer syntaxes: public, not identifying
_SKIPPED_MIME = ("image/", "application/pdf")


class Matcher:
    """Finds runs of tokens whose fingerprint is in ``fps``; fingerprints computed once per distinct run."""

    def __init__(self, fps: Fingerprints, key: bytes, marker: str = MARKER):
        self.fps, self.key, self.marker = fps, key, marker
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

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with every matching run replaced by the marker; and how many runs."""
        if not self.fps.full:
            return text, 0
        toks = tokens(text)
        words = [t for t, _, _ in toks]
        spans: list[tuple[int, int]] = []
        for i, (tok, start, _) in enumerate(toks):
            if (spans and start < spans[-1][1]) or not self._is_first(tok):
                continue
            for n in self.lengths:               # the longest match first
                if i + n <= len(toks) and self._is_value(tuple(words[i:i + n])):
                    spans.append((start, toks[i + n - 1][2]))
                    break
        for start, end in reversed(spans):
            text = text[:start] + self.marker + text[end:]
        return text, len(spans)


def redact_uids(text: str, marker: str = MARKER) -> tuple[str, int]:
    """``text`` with every DICOM-looking instance UID (not a standard 1.2.840.10008 UID) replaced."""
    count = 0

    def sub(m: re.Match) -> str:
        nonlocal count
        uid = m.group(0)
        if len(uid) < _UID_MIN_LEN or uid.startswith(_STANDARD_UID):
            return uid
        count += 1
        return marker

    return _UID.sub(sub, text), count


def redact_text(text: str, fps: Fingerprints, key: bytes, marker: str = MARKER) -> tuple[str, int]:
    """``text`` with every run of tokens matching ``fps`` replaced by ``marker``; and how many runs."""
    return Matcher(fps, key, marker).redact(text)


def _walk_strings(value: Any, fix: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list):
        return [_walk_strings(v, fix) for v in value]
    if isinstance(value, dict):
        return {k: v if str(k).startswith(_SKIPPED_MIME) or k == "buffers" else _walk_strings(v, fix)
                for k, v in value.items()}
    return value


def guard_notebook(nb: dict[str, Any], fps: Fingerprints, key: bytes, marker: str = MARKER,
                   uids: bool = True) -> int:
    """Redact, in place, every output of ``nb`` (nbformat JSON) and its saved widget state: values
    matching ``fps`` and, with ``uids``, any DICOM-looking instance UID; return how many."""
    count = 0
    matcher = Matcher(fps, key, marker)

    def fix(text: str) -> str:
        nonlocal count
        text, n = matcher.redact(text)
        if uids:
            text, m = redact_uids(text, marker)
            n += m
        count += n
        return text

    for cell in nb.get("cells") or ():
        if isinstance(cell, dict) and cell.get("outputs"):
            cell["outputs"] = _walk_strings(cell["outputs"], fix)
    meta = nb.get("metadata")
    if isinstance(meta, dict) and "widgets" in meta:
        meta["widgets"] = _walk_strings(meta["widgets"], fix)
    return count


class SaveGuard(Configurable):
    """The pre-save hook (``c.SaveGuard.mode = "block"`` refuses saves instead of redacting)."""

    mode = Enum(("redact", "block"), default_value="redact",
                help="redact: replace identifying values in outputs with the marker; block: refuse the save."
                ).tag(config=True)
    marker = Unicode(MARKER, help="Text that replaces an identifying value.").tag(config=True)
    uids = Bool(True, help="While a study is open, also replace any DICOM-looking instance UID "
                           "(not 1.2.840.10008.*) in outputs.").tag(config=True)

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
        except Exception as exc:       # fail closed: jupyter_server would save anyway on other errors
            what = str(exc) if isinstance(exc, MedsecError) else type(exc).__name__
            raise HTTPError(500, f"medsec save guard could not check {path}; not saved: {what}") from None
        if found and self.mode == "block":
            raise HTTPError(409, f"medsec save guard: {path} not saved: {found} identifying value(s) of an "
                                 "open study in its outputs; clear those outputs and save again")

    def _record(self, path: str, found: int) -> None:
        AuditLog().append(action="save-guard", outcome="denied" if self.mode == "block" else "success",
                          event=EVENT_SECURITY, purpose="HOPERAT",
                          detail={"notebook": path, "values": found, "mode": self.mode})


def _copy(value: Any) -> Any:
    return _walk_strings(value, lambda s: s)


def register(serverapp: Any) -> SaveGuard:
    """Make a SaveGuard from the server's config and register its hook with the contents manager."""
    guard = SaveGuard(parent=serverapp)
    serverapp.contents_manager.register_pre_save_hook(guard.pre_save)
    serverapp.web_app.settings["medsec_save_guard"] = guard
    return guard
