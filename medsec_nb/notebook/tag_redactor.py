"""``TagRedactor``: the tags of one instance with their action under a profile, option toggles,
per-tag display overrides and an audited, justified, transient reveal of one value.

The plain functions (``tag_rows``, ``check_override``, ``rows_html``) work without Jupyter.
Nothing identifying is put in a widget's state except a revealed value, which is shown in
one ``HTML`` widget and blanked after ``reveal_seconds`` or at the next action, so neither
the saved notebook nor the saved widget state keeps it (the save guard catches a save made
while it is shown).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as w
import pydicom

from ..access.reveal import element_path
from ..core.errors import MedsecError
from ..deid import OPTIONS, Profile, display_action
from ..deid.redaction import REDACTED, current_profile, display_value, private_creator, summary_value, tag_text
from ..deid.scan import IDENTIFYING_KEYWORDS
from ..study import events

if TYPE_CHECKING:
    from ..study import Series, Study

OVERRIDES = ("keep", "redact")
PROFILE = "profile"  # the override toggle's "no override" choice
_PIXEL_DATA = 0x7FE00010
_IDENTITY = frozenset(IDENTIFYING_KEYWORDS)
_REDACTORS: weakref.WeakSet[TagRedactor] = weakref.WeakSet()


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]


def _later(seconds: float, fn: Callable[[], None]) -> Cancellable:
    """Run ``fn`` after ``seconds`` on the running event loop (a kernel's), else on a timer thread."""
    try:
        return asyncio.get_running_loop().call_later(seconds, fn)
    except RuntimeError:  # no running loop (plain Python)
        timer = threading.Timer(seconds, fn)
        timer.daemon = True
        timer.start()
        return timer


@dataclass(frozen=True)
class TagRow:
    """One element of the table: where it is, what the profile does, what is shown."""

    path: str
    tag: str
    keyword: str
    vr: str
    depth: int
    action: str  # keep, remove or replace (under the profile; inherited inside a removed sequence)
    override: str | None  # keep, redact or None
    shown: str


def check_override(elem: pydicom.DataElement, choice: str) -> None:
    """Raise ValueError unless ``choice`` may be applied to ``elem``: "redact" always; "keep" not on
    patient or staff identity (Person Names, IDs, addresses, institution), which needs an audited reveal."""
    if choice not in OVERRIDES:
        raise ValueError(f"unknown override {choice!r}; choose one of {', '.join(OVERRIDES)}")
    if choice == "keep" and (elem.VR == "PN" or elem.keyword in _IDENTITY or elem.tag.is_private):
        raise ValueError(
            f"{elem.keyword or 'a private element'} cannot be kept on display; "
            "reveal it with a justification instead (audited)"
        )


def _walk(
    ds: pydicom.Dataset, steps: list[tuple[int, int | None]], inherited: str | None, profile: Profile
) -> Iterator[tuple[pydicom.DataElement, list[tuple[int, int | None]], str, str]]:
    for elem in ds:
        if elem.tag == _PIXEL_DATA:
            continue
        creator = private_creator(ds, elem.tag)
        action = inherited or display_action(elem.tag, profile, creator)
        yield elem, steps + [(elem.tag, None)], action, creator
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value or ()):
                yield from _walk(item, steps + [(elem.tag, n)], None if action == "keep" else action, profile)


def tag_rows(ds: pydicom.Dataset, profile: Profile, overrides: Mapping[str, str] | None = None) -> list[TagRow]:
    """Every element of ``ds`` at every depth (Pixel Data excepted), with its action under ``profile``
    and its displayed value given the display ``overrides`` (path -> keep or redact)."""
    overrides = overrides or {}
    rows = []
    for elem, steps, action, creator in _walk(ds, [], None, profile):
        path = element_path(steps)
        override = overrides.get(path)
        if override == "redact":
            shown = REDACTED
        elif override == "keep":  # never on identity (see check_override)
            shown = summary_value(elem)
        else:
            shown = REDACTED if action != "keep" else display_value(elem, profile=profile, creator=creator)
        rows.append(
            TagRow(
                path, tag_text(elem.tag), elem.keyword or "(private)", elem.VR, len(steps) - 1, action, override, shown
            )
        )
    return rows


def rows_html(rows: list[TagRow]) -> str:
    """The rows as an escaped HTML table, nested elements indented."""
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("tag", "keyword", "VR", "action", "value"))
    body = []
    for r in rows:
        action = r.action + (f" &rarr; {r.override}" if r.override else "")
        value = (
            f"<span class='medsec-redacted' style='background:#333;color:#fff;padding:0 .3em'>{escape(REDACTED)}</span>"
            if r.shown == REDACTED
            else escape(r.shown)
        )
        pad = f"padding-left:{1.2 * r.depth:.1f}em"
        body.append(
            f"<tr><td style='{pad}'>{escape(r.tag)}</td><td style='{pad}'>{escape(r.keyword)}</td>"
            f"<td>{escape(r.vr)}</td><td>{action}</td><td>{value}</td></tr>"
        )
    return f"<table class='medsec-tags'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class TagRedactor(w.VBox):
    """Tag table of instance ``i`` of a series, profile option toggles, display overrides, audited reveal."""

    _open = False  # until __init__ completes (ipywidgets calls close() from __del__)

    def __init__(
        self,
        series: Series,
        i: int = 0,
        *,
        profile: Profile | None = None,
        reveal_seconds: float = 30.0,
        schedule: Schedule | None = None,
    ):
        """``profile``: the starting profile (default: the current display profile);
        ``reveal_seconds``: how long a revealed value stays on screen; ``schedule(seconds, fn)``:
        runs ``fn`` later and returns something with ``cancel()`` (default: the kernel's event
        loop, else a timer thread; tests pass their own clock)."""
        self._series, self._index = series, i
        self._header = series.header(i)
        self.profile = profile or current_profile()
        self.overrides: dict[str, str] = {}
        self.reveal_seconds = reveal_seconds
        self._schedule = schedule or _later
        self._timer: Cancellable | None = None
        self._elements = {
            element_path(steps): elem for elem, steps, _, _ in _walk(self._header, [], None, self.profile)
        }
        self._open = True
        self.option_boxes = {
            o: w.Checkbox(value=o in self.profile.options, description=o, indent=False) for o in sorted(OPTIONS)
        }
        self.table = w.HTML()
        self.tag = w.Dropdown(options=list(self._elements), description="tag")
        self.override = w.ToggleButtons(options=[PROFILE, *OVERRIDES], value=PROFILE, description="display")
        self.justification = w.Text(
            placeholder="why this value is needed (recorded in the audit log)", description="reason"
        )
        self.reveal_button = w.Button(description="reveal (audited)", button_style="warning")
        self.revealed = w.HTML()
        self.status = w.Label()
        self._parts = [
            w.GridBox(list(self.option_boxes.values()), layout=w.Layout(grid_template_columns="repeat(2, 50%)")),
            w.HBox([self.tag, self.override]),
            w.HBox([self.justification, self.reveal_button]),
        ]
        super().__init__([self._parts[0], self.table, *self._parts[1:], self.revealed, self.status])
        for box in self.option_boxes.values():
            box.observe(self._option_changed, "value")
        self.tag.observe(self._tag_changed, "value")
        self.override.observe(self._override_changed, "value")
        self.reveal_button.on_click(lambda _: self.reveal())
        _REDACTORS.add(self)
        self.refresh()

    @property
    def closed(self) -> bool:
        return not self._open

    @property
    def rows(self) -> list[TagRow]:
        return tag_rows(self._header, self.profile, self.overrides)

    def refresh(self) -> None:
        """Redraw the table for the current profile and overrides."""
        self.table.value = rows_html(self.rows)

    def set_options(self, options: frozenset[str] | set[str]) -> None:
        """Use the Basic Profile with ``options`` in this widget (the toggles follow)."""
        self.hide_revealed()
        self.profile = Profile(frozenset(options))
        for name, box in self.option_boxes.items():
            if box.value != (name in self.profile.options):
                box.value = name in self.profile.options
        self.refresh()

    def set_override(self, path: str, choice: str | None) -> None:
        """Display override of the element at ``path``: "keep", "redact", or None for the profile's."""
        self.hide_revealed()
        if path not in self._elements:
            raise KeyError(f"no element {path!r} in this instance")
        if choice in (None, PROFILE):
            self.overrides.pop(path, None)
        else:
            check_override(self._elements[path], choice)
            self.overrides[path] = choice
        self.refresh()

    def reveal(self, path: str | None = None, justification: str | None = None) -> str | None:
        """Reveal one value through the audited ``Series.reveal`` with the typed justification;
        it is shown for ``reveal_seconds``. Returns the value, or None if refused (status says why)."""
        self.hide_revealed()
        path = path or self.tag.value
        reason = self.justification.value if justification is None else justification
        try:
            value = self._series.reveal(self._index, path, justification=reason)
        except MedsecError as exc:
            self.status.value = f"not revealed: {type(exc).__name__}: {exc}"
            return None
        self.justification.value = ""
        self.revealed.value = (
            f"<b>{escape(path)}</b>: <code>{escape(value)}</code> "
            f"<small>(revealed and audited; hidden in {self.reveal_seconds:g} s)</small>"
        )
        self.status.value = "revealed; the reveal and its reason are in the audit log"
        self._schedule_hide()
        return value

    def hide_revealed(self) -> None:
        """Blank a revealed value now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.revealed.value:
            self.revealed.value = ""

    def _schedule_hide(self) -> None:
        self._timer = self._schedule(self.reveal_seconds, self.hide_revealed)

    def _option_changed(self, change: dict) -> None:
        chosen = {o for o, box in self.option_boxes.items() if box.value}
        dates = {"retain-long-full-dates", "retain-long-modified-dates"}
        if dates <= chosen:  # they exclude each other: keep the one just ticked
            chosen -= dates - {change["owner"].description}
        self.set_options(chosen)

    def _tag_changed(self, change: dict) -> None:
        self.hide_revealed()
        self.status.value = ""
        self.override.value = self.overrides.get(change["new"], PROFILE)

    def _override_changed(self, change: dict) -> None:
        path = self.tag.value
        if self.overrides.get(path, PROFILE) == change["new"]:
            return
        try:
            self.set_override(path, change["new"])
            self.status.value = ""
        except ValueError as exc:
            self.status.value = str(exc)
            self.override.value = self.overrides.get(path, PROFILE)

    def close(self) -> None:
        """Blank any revealed value, drop the decrypted header and close the widgets."""
        if self.closed:
            return
        self._open = False
        _REDACTORS.discard(self)
        self.hide_revealed()
        self._header = None
        self._elements = {}
        self.table.value = ""
        for child in (
            *self.option_boxes.values(),
            self.table,
            self.tag,
            self.override,
            self.justification,
            self.reveal_button,
            self.revealed,
            self.status,
            *self._parts,
        ):
            child.close()
        super().close()


def close_redactors(study: Study) -> int:
    """Close every open tag redactor of ``study``; return how many were closed."""
    mine = [r for r in list(_REDACTORS) if r._series.study is study]
    for r in mine:
        r.close()
    return len(mine)


events.subscribe(closed=close_redactors)  # a closed study's tag tables drop what they show
