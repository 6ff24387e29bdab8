"""Interactive views of a series that a face provides: ``Series.view()`` (the notebook's slice
viewer) and ``Series.redactor()`` (its tag table). The study layer only looks them up here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.errors import MedsecError

if TYPE_CHECKING:
    from .series import Series

Factory = Callable[..., Any]
_providers: dict[str, Factory] = {}


def provide(kind: str, factory: Factory) -> None:
    """Make ``factory(series, *args, **kwargs)`` the ``kind`` view (``"view"``, ``"redactor"``)."""
    _providers[kind] = factory


def make(kind: str, series: Series, *args: Any, **kwargs: Any) -> Any:
    factory = _providers.get(kind)
    if factory is None:
        raise MedsecError(
            f"series.{kind}() is a Jupyter widget: run it in a notebook (import medsec_nb.notebook first outside one)"
        )
    return factory(series, *args, **kwargs)
