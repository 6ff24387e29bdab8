"""Fixtures for the PACS tests: a session-wide Orthanc loaded with a CT (40 slices), an MR and a multi-frame
US study, and a factory for Orthancs a test may stop, kill or configure on its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsec_nb.pacs.receive import Receiver

from .orthanc import Modality, Orthanc, Study, ct_study, load, mr_study, us_multiframe


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """The shared Orthanc (AE title ``ORTHANC``). Tests may add modalities; they must not stop it."""
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="session")
def pacs_studies(orthanc: Orthanc) -> dict[str, Study]:
    """The studies in the shared Orthanc, by kind: ``ct`` (40 slices), ``mr`` (12), ``us`` (one multi-frame)."""
    return {
        "ct": load(orthanc, "CT", ct_study(40)),
        "mr": load(orthanc, "MR", mr_study()),
        "us": load(orthanc, "US", us_multiframe()),
    }


@pytest.fixture
def make_orthanc(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """Start Orthancs of the test's own (``make_orthanc(aet="RESEARCH", modalities={...})``); all are stopped
    at the end of the test, killed if they do not stop."""
    started: list[Orthanc] = []

    def make(aet: str = "ORTHANC", modalities: dict[str, Modality] | None = None) -> Orthanc:
        pacs = Orthanc(tmp_path / f"orthanc-{len(started)}", aet=aet, modalities=dict(modalities or {}))
        started.append(pacs)
        return pacs.start()

    yield make
    for pacs in started:
        pacs.stop()


@pytest.fixture
def receiver(tmp_path: Path, identities) -> Iterator[Callable[..., Receiver]]:
    """A factory for started receivers (port chosen by the system, caller ``MODALITY`` allowed, the test's own
    audit log, the x25519 test key as recipient); every one is stopped after the test."""
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        out = tmp_path / "incoming"
        out.mkdir(exist_ok=True)
        options = {"port": 0, "allowed_callers": ["MODALITY"], "audit_log": tmp_path / "audit.jsonl", **options}
        r = Receiver(out, [identities.x25519], **options).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
