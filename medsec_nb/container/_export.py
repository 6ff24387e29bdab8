"""Plaintext export of an unlocked container (the audited entry point is ``medsec_nb.access``)."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from ..core.atomic import atomic_dir
from ..core.errors import OutputError
from ._reader import Container, export_relpaths


def export_container(box: Container, out_dir: Path, progress: bool = True) -> list[Path]:
    """Write the original DICOM files to ``out_dir``.

    Every byte is authenticated before the first file is written, and ``out_dir`` appears
    only when every file is complete; on any error nothing is left behind.
    """
    box.verify(progress=progress)
    rels = export_relpaths(box.entries)
    try:
        with atomic_dir(out_dir) as tmp:
            for i in tqdm(range(len(rels)), unit="file", desc="decrypt", disable=None if progress else True):
                target = tmp.joinpath(*rels[i].parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as fh:  # never over another instance's file
                    fh.write(box.file_bytes(i))
                    os.fsync(fh.fileno())
    except FileExistsError as exc:
        raise OutputError(str(exc)) from None
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write ({exc.strerror or exc}); nothing was left behind") from None
    return [out_dir.joinpath(*r.parts) for r in rels]
