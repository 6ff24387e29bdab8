"""The installed package's version, from its metadata (pyproject.toml is the one place it is set)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medsec-nb")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
