"""Differentially private releases through OpenDP, with a per-cohort privacy budget.

Neighbouring cohorts differ in one study replaced by another (the number of studies is public),
which is a symmetric distance of 2 on a known-size dataset: a measurement built for distance 1
there would promise epsilon with almost no noise (OpenDP cannot tell that such a neighbour does
not exist), so every release is calibrated for ``d_in = 2``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.errors import MedsecError

#: Symmetric distance between two same-size cohorts that differ in one study.
D_IN = 2
#: What a release protects: one study (a patient with k studies in the cohort is protected at k * epsilon).
PRIVACY_UNIT = "study"


class PrivacyBudgetError(MedsecError):
    """A release would exceed the cohort's privacy budget, or its parameters are unusable."""


@dataclass
class PrivacyAccountant:
    """Pure epsilon-DP budget under basic sequential composition: the epsilons of all releases
    from one cohort add up and may not exceed ``total``."""

    total: float
    spent: float = 0.0
    releases: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.total, (int, float)) and math.isfinite(self.total) and self.total > 0):
            raise PrivacyBudgetError(f"privacy budget {self.total!r}: give a positive, finite epsilon")

    @property
    def remaining(self) -> float:
        return self.total - self.spent

    def spend(self, epsilon: float) -> None:
        """Charge ``epsilon``, or raise without charging if the budget would be exceeded."""
        with self._lock:
            if self.spent + epsilon > self.total * (1 + 1e-12):
                raise PrivacyBudgetError(
                    f"privacy budget exceeded: epsilon {epsilon:g} requested, {self.remaining:g} of {self.total:g} left"
                )
            self.spent += epsilon
            self.releases.append(epsilon)


def check_release(bounds: tuple[float, float], epsilon: float) -> tuple[float, float, float]:
    """Validated (lo, hi, epsilon): explicit finite bounds with lo < hi, positive finite epsilon."""
    try:
        lo, hi = (float(b) for b in bounds)
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise PrivacyBudgetError("bounds=(lo, hi) and epsilon must be numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise PrivacyBudgetError(
            f"bounds {bounds!r}: give finite (lo, hi) with lo < hi, fixed before looking at the data"
        )
    if not (math.isfinite(eps) and eps > 0):
        raise PrivacyBudgetError(f"epsilon {epsilon!r}: give a positive, finite number")
    return lo, hi, eps


def mean_measurement(n: int, lo: float, hi: float, epsilon: float):
    """The OpenDP measurement (clamp, mean, Laplace) over ``n`` values and its noise scale,
    the smallest that keeps ``d_in = 2`` within ``epsilon``."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=n), dp.symmetric_distance()

    def make(scale: float):
        return space >> dp.t.then_clamp((lo, hi)) >> dp.t.then_mean() >> dp.m.then_laplace(scale)

    scale = dp.binary_search_param(make, d_in=D_IN, d_out=epsilon)
    meas = make(scale)
    if meas.map(D_IN) > epsilon:  # binary search guarantees this; checked, not assumed
        raise PrivacyBudgetError("OpenDP measurement does not meet the requested epsilon")
    return meas, scale


def dp_mean(values: Sequence[float], lo: float, hi: float, epsilon: float) -> tuple[float, float]:
    """(released mean, Laplace scale) of ``values`` clamped to [lo, hi]."""
    meas, scale = mean_measurement(len(values), lo, hi, epsilon)
    return float(meas([float(v) for v in values])), scale
