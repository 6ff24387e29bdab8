"""Cohort scale: many encrypted studies analysed on Dask workers, differentially private releases.

See docs/COHORT.md. Needs the ``cohort`` extra (dask.distributed, fsspec, s3fs, OpenDP).
"""

from .core import Cohort, CohortResult
from .privacy import PrivacyAccountant, PrivacyBudgetError
from .transport import WorkerKeyMissingError

__all__ = ["Cohort", "CohortResult", "PrivacyAccountant", "PrivacyBudgetError", "WorkerKeyMissingError"]
