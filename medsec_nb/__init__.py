"""medsec-nb: encrypted DICOM studies you can analyse in Jupyter without exposing patients."""

from .access import VerifyReport, add_recipients, decrypt_study, verify_study
from .container.header import ContainerInfo, inspect_study
from .container.writer import encrypt_study
from .errors import (AuditIntegrityError, AuditUnavailableError, AuthenticationError, FormatError, KeyFileError,
                     MedsecError, NoMatchingRecipientError, OutputError, PolicyDeniedError, PolicyError,
                     SignatureError, SourceError, StudyClosedError, WrongPassphraseError)
from .keys import Identity, Recipient, generate_identity, load_identity, load_recipient, save_identity
from .study import Series, Study, open_study

__version__ = "0.1.0"


def load_ipython_extension(ip) -> None:
    """``%load_ext medsec_nb``: the magics (imported lazily, so the CLI never loads IPython)."""
    from .magics import load_ipython_extension as load
    load(ip)


def unload_ipython_extension(ip) -> None:
    from .magics import unload_ipython_extension as unload
    unload(ip)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives (``jupyter labextension develop .``)."""
    return [{"src": "labextension", "dest": "medsec-nb"}]


__all__ = [
    "encrypt_study", "open_study", "verify_study", "inspect_study", "add_recipients", "decrypt_study",
    "generate_identity", "save_identity", "load_identity", "load_recipient", "Identity", "Recipient",
    "Study", "Series", "ContainerInfo", "VerifyReport",
    "MedsecError", "FormatError", "AuthenticationError", "NoMatchingRecipientError", "WrongPassphraseError",
    "SignatureError", "KeyFileError", "SourceError", "OutputError", "StudyClosedError",
    "PolicyDeniedError", "PolicyError", "AuditUnavailableError", "AuditIntegrityError",
]
