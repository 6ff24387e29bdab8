"""The ``medsec`` command line (``medsec_nb.cli:main``)."""

from .main import main

__all__ = ["main"]
