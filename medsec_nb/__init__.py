"""medsec-nb: encrypted DICOM studies you can analyse in Jupyter without exposing patients.

The public names below are imported on first use (PEP 562), so ``medsec --help`` and other
commands load only what they need; ``import medsec_nb`` itself costs almost nothing.

This module is also where the faces are wired to the layers (which know none of them): in an
IPython session the notebook face (rich displays, widgets, the kernel registry) and the save
guard's publisher subscribe to the study events; with ``MEDSEC_SAVE_GUARD_PUBLISH=1`` any
process publishes.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from .core.errors import (
    AuditIntegrityError,
    AuditUnavailableError,
    AuthenticationError,
    FormatError,
    KeyFileError,
    MedsecError,
    NoMatchingRecipientError,
    OutputError,
    PolicyDeniedError,
    PolicyError,
    SignatureError,
    SourceError,
    StudyClosedError,
    WrongPassphraseError,
)
from .core.version import __version__

if TYPE_CHECKING:
    from .access import VerifyReport, add_recipients, decrypt_study, verify_study
    from .container.header import ContainerInfo, inspect_study
    from .container.writer import encrypt_study
    from .keys import Identity, Recipient, generate_identity, load_identity, load_recipient, save_identity
    from .study import Series, Study, open_study

_LAZY = {
    "VerifyReport": "access",
    "add_recipients": "access",
    "decrypt_study": "access",
    "verify_study": "access",
    "ContainerInfo": "container.header",
    "inspect_study": "container.header",
    "encrypt_study": "container.writer",
    "Identity": "keys",
    "Recipient": "keys",
    "generate_identity": "keys",
    "load_identity": "keys",
    "load_recipient": "keys",
    "save_identity": "keys",
    "Series": "study",
    "Study": "study",
    "open_study": "study",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")  # a subpackage: medsec_nb.access, ...
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _wire(ip: Any = None) -> None:
    """Subscribe the faces that follow studies in this process (see the module docstring)."""
    if ip is None:
        ipython = sys.modules.get("IPython")
        ip = ipython.get_ipython() if ipython is not None else None
    if ip is not None:
        from .notebook import register_displays

        register_displays(ip)
    if ip is not None or os.environ.get("MEDSEC_SAVE_GUARD_PUBLISH") == "1":
        importlib.import_module(f"{__name__}.saveguard")


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext medsec_nb``: the magics, the redacted displays and the faces that follow
    studies (imported lazily, so the CLI never loads IPython)."""
    from .notebook.magics import load_ipython_extension as load

    _wire(ip)
    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    from .notebook.magics import unload_ipython_extension as unload

    unload(ip)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives (``jupyter labextension develop .``)."""
    return [{"src": "labextension", "dest": "medsec-nb"}]


__all__ = [
    "AuditIntegrityError",
    "AuditUnavailableError",
    "AuthenticationError",
    "ContainerInfo",
    "FormatError",
    "Identity",
    "KeyFileError",
    "MedsecError",
    "NoMatchingRecipientError",
    "OutputError",
    "PolicyDeniedError",
    "PolicyError",
    "Recipient",
    "Series",
    "SignatureError",
    "SourceError",
    "Study",
    "StudyClosedError",
    "VerifyReport",
    "WrongPassphraseError",
    "__version__",
    "add_recipients",
    "decrypt_study",
    "encrypt_study",
    "generate_identity",
    "inspect_study",
    "load_identity",
    "load_recipient",
    "open_study",
    "save_identity",
    "verify_study",
]

_wire()
