"""IPython magics: ``%load_secure_study``, ``%unload_secure_study``, ``%%secure_session``.

Thin skins over plain functions (``open_interactive``, ``unload``, ``study_name``) that work
without IPython. Passphrases are asked with ``getpass`` (a password field in Jupyter) and
are never magic arguments, so they never reach ``In``, ``_ih``, the history database or outputs.

Errors: a :class:`~medsec_nb.MedsecError` raised under a magic becomes a :class:`MagicError`,
which IPython shows as one line (``WrongPassphraseError: study.msec: ...``) whatever the
``%xmode``, and which still fails the cell (so "Run all" stops there). It carries no
traceback or context: the frames that held a passphrase are not kept alive by it.
"""

from __future__ import annotations

import getpass
import keyword
import os
import re
from collections.abc import Callable
from pathlib import Path

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Enum, List, TraitError, Unicode, observe, validate

from ..access.service import resolve_keyservice
from ..core.errors import MedsecError
from ..deid.redaction import PROFILE_NAMES, make_profile, set_profile
from ..study import Study, open_study
from .hardening import harden_process


class MagicError(MedsecError):
    """A magic failed; IPython shows ``kind: message`` on one line, without a traceback."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind

    def _render_traceback_(self) -> list[str]:
        return [f"{self.kind}: {self}"]


def ask_secret(prompt: str) -> str:
    """Read a secret without echo: a terminal prompt, or Jupyter's password field."""
    try:
        return getpass.getpass(prompt)
    except StdinNotImplementedError:
        raise MedsecError(
            "this frontend cannot ask for a passphrase (no stdin); run the cell from "
            "JupyterLab, Notebook or an IPython terminal"
        ) from None


def open_interactive(
    path: str | os.PathLike,
    *,
    identity: str | os.PathLike | None = None,
    use_passphrase: bool = False,
    purpose: str | None = None,
    require_signer: str | os.PathLike | None = None,
    audit_log: str | os.PathLike | None = None,
    keyservice: str | os.PathLike | None = None,
    ask: Callable[[str], str] = ask_secret,
) -> Study:
    """``open_study``, asking for whatever secret is needed.

    With an ``identity`` (a key file), its passphrase is asked only if the file is encrypted;
    with a ``keyservice`` (else ``$MEDSEC_KEYSERVICE``) and no identity, the key service
    releases the key and nothing is asked; otherwise the study passphrase is asked.
    """
    path = Path(path).expanduser()
    common = {
        "purpose": purpose,
        "require_signer": Path(require_signer).expanduser() if require_signer else None,
        "audit_log": audit_log,
    }
    if identity is not None and not use_passphrase:
        key = Path(identity).expanduser()
        return open_study(path, identity=key, identity_passphrase=lambda: ask(f"Passphrase for key {key}: "), **common)
    service = resolve_keyservice(keyservice)
    if service is not None and not use_passphrase:
        return open_study(path, keyservice=service, **common)
    return open_study(path, passphrase=lambda: ask(f"Passphrase for study {path.name}: "), **common)


def _unquote(text: str | None) -> str | None:
    """magic_arguments keeps quotes around arguments (``'my study.msec'``); drop one matching pair."""
    if text and len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def study_name(path: str | os.PathLike) -> str:
    """A Python identifier from a file name: ``data/ct-chest.msec`` -> ``ct_chest``."""
    name = re.sub(r"\W", "_", Path(path).name.split(".")[0]) or "study"
    if name[0].isdigit():
        name = "_" + name
    return name + "_" if keyword.iskeyword(name) else name


def unload(study: Study) -> None:
    """Close ``study``: its keys and index are dropped, and its viewers and tag redactors (which
    follow the study's close event) drop what they hold."""
    study.close()


def _concise(fn: Callable, *args, **kwargs):
    """Call ``fn``; turn a MedsecError into a MagicError raised outside the handler (no context)."""
    try:
        return fn(*args, **kwargs)
    except MedsecError as exc:
        err = MagicError(str(exc), getattr(exc, "kind", type(exc).__name__))
    raise err


@magics_class
class MedsecMagics(Magics):
    """Open encrypted studies into the notebook namespace (``%config MedsecMagics`` to configure)."""

    default_identity = Unicode(None, allow_none=True, help="Private key file used when --identity is not given.").tag(
        config=True
    )
    default_purpose = Unicode(
        None, allow_none=True, help="Purpose of use (e.g. TREAT, HRESCH, EDU) when --purpose is not given."
    ).tag(config=True)
    redaction_profile = Enum(
        PROFILE_NAMES,
        default_value="basic",
        help="Display redaction profile: 'basic', the PS3.15 Basic Profile ('conservative' is its former name).",
    ).tag(config=True)
    redaction_options = List(
        Unicode(),
        default_value=[],
        help="PS3.15 profile options applied to every display, e.g. "
        "['retain-long-full-dates'] (names: medsec_nb.deid.OPTIONS).",
    ).tag(config=True)
    audit_log = Unicode(
        None, allow_none=True, help="Audit log file (default: $MEDSEC_AUDIT_LOG, else the user's data folder)."
    ).tag(config=True)
    keyservice = Unicode(
        None,
        allow_none=True,
        help="Key service socket (default $MEDSEC_KEYSERVICE): studies open with no key file, the service "
        "decides, records and releases (docs/KEYSERVICE.md).",
    ).tag(config=True)
    harden = Bool(True, help="Disable core dumps and ptrace (harden_process) before opening a study.").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.loaded: dict[str, Study] = {}
        self._session: dict[str, str] = {}
        set_profile(self.redaction_profile, self.redaction_options)

    @validate("redaction_options")
    def _check_options(self, proposal) -> list[str]:
        try:
            make_profile(self.redaction_profile, proposal["value"])
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return list(dict.fromkeys(proposal["value"]))

    @observe("redaction_profile", "redaction_options")
    def _apply_profile(self, change) -> None:
        set_profile(self.redaction_profile, self.redaction_options)

    @magic_arguments()
    @argument("path", help="the encrypted study (.msec)")
    @argument(
        "--identity",
        "-i",
        metavar="KEY",
        help="private key file; default: the %%%%secure_session's, then MedsecMagics.default_identity",
    )
    @argument(
        "--passphrase-prompt",
        action="store_true",
        help="open with the study passphrase instead of a key (asked without echo)",
    )
    @argument(
        "--purpose",
        "-p",
        metavar="P",
        help="purpose of use recorded with the access (e.g. HRESCH); default: the %%%%secure_session's, "
        "then MedsecMagics.default_purpose, then $MEDSEC_PURPOSE",
    )
    @argument("--as", dest="name", metavar="NAME", help="variable to bind (default: from the file name)")
    @argument("--require-signer", metavar="PUB", help="refuse the study unless signed by this public key")
    @line_magic
    def load_secure_study(self, line: str) -> Study:
        """Open an encrypted study, bind it in the user namespace and return it.

        Passphrases (of the key file or of the study) are asked in a password field, never
        passed here. Example::

            %load_secure_study data/ct_chest.msec --identity ~/.medsec/me.key --purpose HRESCH --as ct
        """
        args = parse_argstring(self.load_secure_study, line)
        args.path, args.identity, args.require_signer = map(_unquote, (args.path, args.identity, args.require_signer))
        if args.identity and args.passphrase_prompt:
            raise UsageError("give --identity or --passphrase-prompt, not both")
        name = args.name or study_name(args.path)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise UsageError(f"--as {name!r} is not a valid Python name")
        if self.harden:
            harden_process()
        study = _concise(
            open_interactive,
            args.path,
            identity=args.identity or self._session.get("identity") or self.default_identity,
            use_passphrase=args.passphrase_prompt,
            require_signer=args.require_signer,
            purpose=args.purpose or self._session.get("purpose") or self.default_purpose,
            audit_log=self.audit_log,
            keyservice=self.keyservice,
        )
        previous = self.loaded.pop(name, None)
        if previous is not None and previous is not study:
            unload(previous)
        self.loaded[name] = study
        self.shell.push({name: study})
        return study

    @magic_arguments()
    @argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="variables to close and remove (default: every study %%load_secure_study bound)",
    )
    @line_magic
    def unload_secure_study(self, line: str) -> None:
        """Close studies (dropping keys, index and viewer caches) and remove their variables."""
        args = parse_argstring(self.unload_secure_study, line)
        for name in args.names or list(self.loaded):
            study = self.loaded[name] if name in self.loaded else self.shell.user_ns.get(name)
            if not isinstance(study, Study):
                raise UsageError(f"{name} is not a study")
            unload(study)
            if self.shell.user_ns.get(name) is study:
                del self.shell.user_ns[name]
            self.loaded.pop(name, None)

    @magic_arguments()
    @argument("--purpose", "-p", metavar="P", help="purpose of use for the studies loaded in this cell")
    @argument("--identity", "-i", metavar="KEY", help="private key file for the studies loaded in this cell")
    @cell_magic
    def secure_session(self, line: str, cell: str) -> None:
        """Run the cell with a default purpose and identity for ``%load_secure_study``."""
        args = parse_argstring(self.secure_session, line)
        args.identity = _unquote(args.identity)
        saved = dict(self._session)
        self._session.update({k: v for k, v in (("purpose", args.purpose), ("identity", args.identity)) if v})
        try:
            result = self.shell.run_cell(cell, store_history=False)
        finally:
            self._session = saved
        if not result.success:
            raise MagicError("the block stopped at the error shown above", "secure_session")

    def unload_all(self) -> None:
        """Close every study this instance bound (used when the extension is unloaded)."""
        self.unload_secure_study("")


def load_ipython_extension(ip) -> None:
    """``%load_ext medsec_nb``: register the magics (which also makes them ``%config``-urable)."""
    ip.register_magics(MedsecMagics(shell=ip))


def unload_bound(study: Study) -> None:
    """Close ``study`` as ``%unload_secure_study`` does when the magics bound it to a name (the
    name is removed too), else as :func:`unload`."""
    from IPython import get_ipython

    ip = get_ipython()
    magics = ip.magics_manager.registry.get(MedsecMagics.__name__) if ip is not None else None
    names = [n for n, s in magics.loaded.items() if s is study] if magics is not None else []
    if names:
        magics.unload_secure_study(" ".join(names))
    else:
        unload(study)


def unload_ipython_extension(ip) -> None:
    """Close the studies the magics opened and remove the magics."""
    magics = ip.magics_manager.registry.pop(MedsecMagics.__name__, None)
    if magics is None:
        return
    magics.unload_all()
    set_profile()
    for kind, names in magics.magics.items():
        for name in names:
            ip.magics_manager.magics[kind].pop(name, None)
    ip.configurables[:] = [c for c in ip.configurables if c is not magics]
