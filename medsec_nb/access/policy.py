"""Access policy: may this subject perform this action on this study for this purpose? (pycasbin)

A policy is a casbin model (``.conf``) and a CSV of rules. The CSV is found by argument, else
``$MEDSEC_POLICY``, else the shipped default (``medsec_nb/data/policy/default.csv``: the local
user may do everything). The model is the ``.conf`` of the same stem beside the CSV, else the
shipped ``default.conf``. Rules read ``p, subject, object, action, purpose, expires, effect``;
``g, user, role`` gives roles and ``g2, study, project`` puts studies in projects. See
docs/AUDIT.md, "Access policy".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Protocol

import casbin

from ..core.errors import PolicyDeniedError, PolicyError
from ..core.identity import os_user

#: ``pull``, ``pull-by-patient``, ``push`` and ``receive`` move studies between a PACS and
#: containers (docs/PACS.md, "Who may pull, push and receive").
ACTIONS = ("decrypt", "reveal-tag", "export", "add-recipient", "pull", "pull-by-patient", "push", "receive")
#: The role held by the user this process runs for.
LOCAL_ROLE = "@local"
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "policy"
DEFAULT_POLICY = DATA_DIR / "default.csv"
DEFAULT_MODEL = DATA_DIR / "default.conf"


@dataclass(frozen=True)
class Decision:
    """``rule``: the rule that decided (its CSV fields after ``p``), None when no rule matched."""

    allowed: bool
    rule: list[str] | None
    reason: str


class Decider(Protocol):
    """What decides a request: a loaded :class:`Policy`, or the key service's
    (:class:`medsec_nb.access.service.ServicePolicy`)."""

    def check(self, subject: str, action: str, obj: str, purpose: str, *, projects: Iterable[str] = ()) -> Decision: ...


def local_user() -> str:
    """The subject of this process's requests: its effective OS user (:func:`os_user`),
    never an environment variable."""
    return os_user()


def _expiry(value: str) -> date | None:
    """Last valid day (UTC) of a rule; None for ``*``; ValueError if malformed."""
    return None if value == "*" else date.fromisoformat(value)


def _rule_text(rule: list[str]) -> str:
    return "p, " + ", ".join(rule)


class Policy:
    """A loaded policy. Use :meth:`load`."""

    def __init__(self, enforcer: casbin.Enforcer, csv_path: Path, model_path: Path):
        self.path = csv_path
        self.model_path = model_path
        self._e = enforcer
        self._relax: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._col = {name: i for i, name in enumerate(enforcer.get_model()["p"]["p"].tokens)}
        enforcer.add_function("purposeMatch", self._purpose_match)
        enforcer.add_function("notExpired", self._not_expired)

    def __repr__(self) -> str:
        return f"Policy({str(self.path)!r}, model={str(self.model_path)!r})"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, local: str | None = None) -> Policy:
        """Load the policy CSV ``path`` (else ``$MEDSEC_POLICY``, else the shipped default).
        ``local``: who holds the ``@local`` role (default: :func:`local_user`)."""
        if path is None:
            path = os.environ.get("MEDSEC_POLICY") or DEFAULT_POLICY
        csv_path = Path(path).expanduser()
        if not csv_path.is_file():
            raise PolicyError(f"{csv_path}: policy file not found")
        model_path = csv_path.with_suffix(".conf")
        if not model_path.is_file():
            model_path = DEFAULT_MODEL
        try:
            enforcer = casbin.Enforcer(str(model_path), str(csv_path))
            enforcer.enable_auto_save(False)
            tokens = enforcer.get_model()["r"]["r"].tokens
        except Exception as exc:  # casbin raises assorted built-in exceptions for bad files
            raise PolicyError(
                f"{csv_path}: cannot load the policy with model {model_path} ({type(exc).__name__}: {exc})"
            ) from None
        if len(tokens) != 4:
            raise PolicyError(f"{model_path}: the request must be 'r = sub, obj, act, pur'")
        _validate(enforcer, csv_path)
        enforcer.add_grouping_policy(local if local is not None else local_user(), LOCAL_ROLE)
        return cls(enforcer, csv_path, model_path)

    # -- matcher functions (named in the model)
    def _purpose_match(self, requested: str, allowed: str) -> bool:
        return "purpose" in self._relax or allowed == "*" or requested in allowed.split("|")

    def _not_expired(self, expires: str) -> bool:
        if "expiry" in self._relax:
            return True
        try:
            last = _expiry(expires)
        except ValueError:
            return False
        return last is None or datetime.now(timezone.utc).date() <= last

    # -- decisions
    def _enforce(self, sub: str, obj: str, act: str, pur: str, relax: Iterable[str] = ()) -> tuple[bool, list[str]]:
        self._relax = frozenset(relax)
        try:
            ok, rule = self._e.enforce_ex(sub, obj, act, pur)
        finally:
            self._relax = frozenset()
        return bool(ok), list(rule)

    def check(self, subject: str, action: str, obj: str, purpose: str, *, projects: Iterable[str] = ()) -> Decision:
        """Decide whether ``subject`` may do ``action`` on ``obj`` (a container SHA-256 or
        Study Instance UID) for ``purpose``. ``projects``: further names the study is known by
        (its other identifier, projects it belongs to); each is tried as the object, and a deny
        rule matching any of them wins."""
        if action not in ACTIONS:
            raise PolicyError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        for what, value in (("subject", subject), ("object", obj), ("purpose", purpose)):
            if not isinstance(value, str) or not value.strip():
                raise PolicyError(f"a policy request needs a {what}")
        request = f"{subject} to {action} {obj} for purpose {purpose}"
        objects = [obj, *[p for p in projects if p and p != obj]]
        with self._lock:
            results = [self._enforce(subject, o, action, purpose) for o in objects]
            for ok, rule in results:
                if not ok and rule:
                    return Decision(
                        False, rule, f"denied: rule '{_rule_text(rule)}' forbids {request} (policy {self.path})"
                    )
            for ok, rule in results:
                if ok:
                    return Decision(
                        True,
                        rule or None,
                        f"allowed: {request} by rule '{_rule_text(rule) if rule else '(none)'}' (policy {self.path})",
                    )
            return Decision(
                False,
                None,
                f"denied: {self._near_miss(subject, action, objects, purpose, request)} (policy {self.path})",
            )

    def _near_miss(self, subject: str, action: str, objects: list[str], purpose: str, request: str) -> str:
        """Why nothing allowed the request: a rule that would, but for its expiry or purpose."""
        for relax in (("expiry",), ("purpose",), ("expiry", "purpose")):
            for o in objects:
                ok, rule = self._enforce(subject, o, action, purpose, relax)
                if ok and rule:
                    why = []
                    if "expiry" in relax:
                        why.append(f"it expired (last valid day {self._field(rule, 'p_expires')})")
                    if "purpose" in relax:
                        why.append(f"it allows purpose {self._field(rule, 'p_pur')}, not {purpose}")
                    return f"no rule allows {request}; rule '{_rule_text(rule)}' would, but {' and '.join(why)}"
        return f"no rule allows {request}"

    def _field(self, rule: list[str], name: str) -> str:
        i = self._col.get(name)
        return rule[i] if i is not None and i < len(rule) else "?"

    def require(self, subject: str, action: str, obj: str, purpose: str, *, projects: Iterable[str] = ()) -> Decision:
        """:meth:`check`, raising :class:`PolicyDeniedError` when denied."""
        decision = self.check(subject, action, obj, purpose, projects=projects)
        if not decision.allowed:
            raise PolicyDeniedError(decision)
        return decision


def _validate(enforcer: casbin.Enforcer, csv_path: Path) -> None:
    """Catch typos in the standard columns: unknown action, bad expiry date, unknown effect."""
    tokens = enforcer.get_model()["p"]["p"].tokens
    col = {name: i for i, name in enumerate(tokens)}
    for rule in enforcer.get_policy():
        where = f"{csv_path}: rule '{_rule_text(rule)}'"
        if "p_act" in col and rule[col["p_act"]] not in (*ACTIONS, "*"):
            raise PolicyError(f"{where}: unknown action (one of {', '.join(ACTIONS)} or *)")
        if "p_eft" in col and rule[col["p_eft"]] not in ("allow", "deny"):
            raise PolicyError(f"{where}: the effect must be allow or deny")
        if "p_expires" in col:
            try:
                _expiry(rule[col["p_expires"]])
            except ValueError:
                raise PolicyError(f"{where}: expiry must be YYYY-MM-DD or *") from None
