"""Side-by-side timing shared by the benchmarks: two routes alternate within each round."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, after a garbage collection."""
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def paired_rounds(
    a: Callable[[], object],
    b: Callable[[], object],
    rounds: int,
    *,
    after: Callable[[str], object] | None = None,
    per: int = 1,
) -> list[tuple[float, float]]:
    """(a, b) seconds (divided by ``per``) for each of ``rounds`` rounds after an untimed-result
    warm-up round; the order alternates from round to round; ``after("a" | "b")`` runs untimed
    after each route."""
    out = []
    for r in range(rounds + 1):
        pair: dict[str, float] = {}
        for name, fn in (("a", a), ("b", b)) if r % 2 else (("b", b), ("a", a)):
            pair[name] = timed(fn) / per
            if after is not None:
                after(name)
        if r:  # round 0 is the warm-up
            out.append((pair["a"], pair["b"]))
    return out
