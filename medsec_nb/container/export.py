"""Whole-container operations on an unlocked container: verify every byte, export plaintext."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import atomic_dir
from ..errors import OutputError
from ..keys import Identity, Passphrase, Recipient
from .reader import export_relpaths, open_container


@dataclass(frozen=True)
class VerifyReport:
    path: str
    instance_count: int
    bytes_authenticated: int
    signer: str | None
    key_id: str


def verify_study(path: str | os.PathLike, identity: Identity | str | os.PathLike | None = None,
                 passphrase: Passphrase = None, *, require_signer: Recipient | str | os.PathLike | None = None,
                 identity_passphrase: Passphrase = None, progress: bool = False) -> VerifyReport:
    """Authenticate every byte of a container (header, index, every chunk); write nothing."""
    with open_container(path, identity, passphrase, require_signer, identity_passphrase=identity_passphrase) as box:
        n = box.verify(progress=progress)
        return VerifyReport(str(path), len(box.entries), n, box.signer, box.key_id)


def decrypt_study(path: str | os.PathLike, out_dir: str | os.PathLike,
                  identity: Identity | str | os.PathLike | None = None, passphrase: Passphrase = None, *,
                  require_signer: Recipient | str | os.PathLike | None = None,
                  identity_passphrase: Passphrase = None, progress: bool = True) -> list[Path]:
    """Export the original DICOM files to ``out_dir`` (explicit plaintext export).

    Every segment's hash is checked before the first file is written, and ``out_dir``
    appears only when every file is complete; on any error nothing is left behind.
    """
    out_dir = Path(out_dir)
    with open_container(path, identity, passphrase, require_signer, identity_passphrase=identity_passphrase) as box:
        box.check_hashes()
        rels = export_relpaths(box.entries)
        try:
            with atomic_dir(out_dir) as tmp:
                for i in tqdm(range(len(rels)), unit="file", desc="decrypt", disable=None if progress else True):
                    target = tmp.joinpath(*rels[i].parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as fh:
                        fh.write(box.file_bytes(i))
                        os.fsync(fh.fileno())
        except FileExistsError as exc:
            raise OutputError(str(exc)) from None
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot write ({exc.strerror or exc}); nothing was left behind") from None
        return [out_dir.joinpath(*r.parts) for r in rels]
