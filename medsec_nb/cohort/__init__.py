"""Cohort scale: many encrypted studies analysed on Dask workers, differentially private releases.

See docs/COHORT.md. Needs the ``cohort`` extra (dask.distributed, fsspec, s3fs, OpenDP).
"""

from .core import Cohort, CohortResult
from .transport import WorkerKeyMissingError
from .privacy import PrivacyAccountant, PrivacyBudgetError

__all__ = ["Cohort", "CohortResult", "PrivacyAccountant", "PrivacyBudgetError", "WorkerKeyMissingError"]
