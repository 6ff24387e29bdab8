"""Studies: an opened container as series of DICOM instances, decrypted in memory on demand."""

from .study import DEFAULT_THREADS, Series, Study, open_study

__all__ = ["DEFAULT_THREADS", "Series", "Study", "open_study"]
