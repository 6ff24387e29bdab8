"""Study: a decrypted view of a container, in memory only; ``open_study`` opens one.

``open_study`` authenticates the header and index; instances are decrypted when asked
for. ``Series.volume()`` decrypts pixel values straight into the output array on two
threads (AES-GCM, SHA-256 and NumPy release the GIL), without parsing any header. Faces
(the notebook, the save guard) follow studies through :mod:`medsec_nb.study.events`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom

from ..access.gate import Access, open_audited
from ..access.policy import Policy
from ..audit import AuditLog
from ..container._reader import Container
from ..core.errors import StudyClosedError
from ..keys.identity import Identity, Passphrase, Recipient
from . import events
from .derived import Opener, save_derived
from .series import Series

if TYPE_CHECKING:
    from ..deid.export import ExportReport

#: Decrypting threads per study unless ``open_study(..., threads=)`` says otherwise.
DEFAULT_THREADS = 2


def _threads(n: int | None) -> int:
    if n is None:
        return DEFAULT_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a whole number >= 1, not {n!r}")
    return n


class Study:
    """A decrypted-on-demand view of a container. Use ``with open_study(...) as study:``.

    ``threads``: how many threads decrypt a bulk read (``volume()``, iteration). ``opener``: the
    opening identity's public key or key file, for the default recipients of ``save_derived``."""

    def __init__(self, box: Container, access: Access, *, threads: int | None = None, opener: Opener = None):
        self._box = box
        self._access = access
        self._opener = opener
        self.threads = _threads(threads)
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(box.entries):
            groups.setdefault(e["series"], []).append(i)
        series = [Series(self, idx) for idx in groups.values()]
        series.sort(key=lambda s: (s.number is None, s.number or 0.0, s.uid))
        self.series: list[Series] = series

    def _container(self) -> Container:
        """The open container (for this package's series); StudyClosedError once closed."""
        if self._box.closed:
            raise StudyClosedError(f"{self._box.path}: study is closed; open it again to read")
        return self._box

    def require_open(self) -> None:
        """Raise StudyClosedError if the study was closed."""
        self._container()

    @property
    def access(self) -> Access:
        """The authorised opening: asks the policy about, and records, what is done with the study."""
        return self._access

    @property
    def audit_log(self) -> AuditLog:
        """The audit log this study's accesses are recorded in."""
        return self._access.log

    @property
    def path(self) -> str:
        return str(self._box.path)

    @property
    def purpose(self) -> str:
        """The purpose of use this study was opened for (recorded with every access)."""
        return self._access.purpose

    @property
    def signer(self) -> str | None:
        """Key id of the verified producer signature, or None if unsigned."""
        return self._box.signer

    @property
    def key_id(self) -> str:
        """Key id of the identity that opened the study ("passphrase" for a passphrase)."""
        return self._box.key_id

    @property
    def instance_count(self) -> int:
        return sum(len(s) for s in self.series)

    @property
    def closed(self) -> bool:
        return self._box.closed

    def close(self) -> None:
        """Drop the keys and index; later access raises StudyClosedError."""
        self._box.close()
        events.emit_closed(self)

    def export_deidentified(self, output: str | os.PathLike[str] | None = None, **kwargs: Any) -> ExportReport:
        """De-identify this study (PS3.15 Basic Profile plus ``options``) to a DICOM folder or, with
        ``recipients``, a new container; audited, atomic, leak-scanned. Keyword arguments and the
        returned conformance report: ``medsec_nb.study.export.export_deidentified``."""
        from .export import export_deidentified

        return export_deidentified(self, output, **kwargs)

    def save_derived(
        self,
        instances: Iterable[pydicom.Dataset | bytes],
        dest: str | os.PathLike[str],
        recipients: Iterable[Recipient | Identity | str | os.PathLike[str]] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Store derived DICOM objects (a Segmentation, a secondary capture; datasets or Part 10 bytes)
        of this study encrypted in the new container ``dest``, never as plaintext; audited as ``derived``.
        Without ``recipients`` (or ``passphrase=``) they go to the key service's site keys or the
        opening identity's public key. ``passphrase``, ``signer``, ``progress`` and the choice of
        recipients: ``medsec_nb.study.derived.save_derived``."""
        return save_derived(self, instances, dest, recipients, opener=self._opener, **kwargs)

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<Study {os.path.basename(self.path)} (closed)>"
        return (
            f"<Study {os.path.basename(self.path)}: {len(self.series)} series, "
            f"{self.instance_count} instances, signer {self.signer or 'none'}>"
        )


def open_study(
    path: str | os.PathLike[str],
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    *,
    purpose: str | None = None,
    purpose_text: str | None = None,
    require_signer: Recipient | str | os.PathLike[str] | None = None,
    identity_passphrase: Passphrase = None,
    audit_log: AuditLog | str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    threads: int | None = None,
    keyservice: str | os.PathLike[str] | None = None,
) -> Study:
    """Open an encrypted study with a private key (``identity``) or the study ``passphrase``.

    ``purpose`` (required, or ``$MEDSEC_PURPOSE``): the purpose of use, e.g. TREAT, HRESCH, EDU.
    The access policy is asked before any key is unwrapped, and the opening is recorded in the
    audit log (``audit_log``, else ``$MEDSEC_AUDIT_LOG``, else the user's data folder).
    ``identity`` may be a path to a ``.key`` file; ``identity_passphrase`` unlocks it.
    ``require_signer`` (a public key) refuses studies not signed by that key.
    ``threads``: decrypting threads per bulk read (default :data:`DEFAULT_THREADS`).
    ``keyservice`` (else ``$MEDSEC_KEYSERVICE``), when no identity or passphrase is given: the
    key service's socket; it decides, records and releases the study key, and records every
    later read (docs/KEYSERVICE.md). No identity file is needed or looked for.
    """
    threads = _threads(threads)  # a bad value fails before anything is unlocked
    box, access = open_audited(
        path,
        op="open",
        purpose=purpose,
        purpose_text=purpose_text,
        identity=identity,
        passphrase=passphrase,
        require_signer=require_signer,
        identity_passphrase=identity_passphrase,
        audit_log=audit_log,
        policy=policy,
        keyservice=keyservice,
    )
    opener = identity.public if isinstance(identity, Identity) else identity
    study = Study(box, access, threads=threads, opener=opener)
    events.emit_opened(study)
    return study
