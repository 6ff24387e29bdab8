"""Studies: an opened container as series of DICOM instances, decrypted in memory on demand."""

from .series import Series
from .study import DEFAULT_THREADS, Study, open_study

__all__ = ["DEFAULT_THREADS", "Series", "Study", "open_study"]
