"""A DICOMweb server as a pull source: QIDO-RS finds the study and its instances, WADO-RS streams them.

The study is retrieved in one multipart WADO-RS response with ``transfer-syntax=*`` (each instance as the
server stores it) and each part is handed on as soon as it has arrived: memory holds one instance at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient

from .peer import Found, PacsError, StudyQuery, one_study

ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Bytes read from the network at a time.
CHUNK = 1 << 20
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def multipart_parts(content_type: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The bodies of a ``multipart/related`` message as they arrive; ValueError if it is not one, and
    :class:`ConnectionAbortedError` if it ends before its closing boundary (the peer went away)."""
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/related") or not match:
        raise ValueError(f"not a multipart/related answer ({content_type[:60]!r})")
    delim = b"\r\n--" + match.group(1).encode()
    buf, scan, first = bytearray(b"\r\n"), 0, True
    while True:
        i = buf.find(delim, scan)
        if i < 0 or len(buf) < i + len(delim) + 2:
            chunk = next(chunks, None)
            if chunk is None:
                raise ConnectionAbortedError("the answer ended before its last part")
            scan = max(0, len(buf) - len(delim) - 2) if i < 0 else i
            buf += chunk
            continue
        if not first:
            head_end = buf.find(b"\r\n\r\n", 0, i)
            if head_end < 0:
                raise ValueError("a part without headers")
            yield bytes(buf[head_end + 4 : i])
        first = False
        if buf[i + len(delim) : i + len(delim) + 2] == b"--":
            return
        del buf[: i + len(delim) + 2]
        scan = 0


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


class DicomWeb:
    """The DICOMweb service at ``url`` (e.g. ``https://pacs.example/dicom-web``); ``session`` carries any
    authentication the server needs (a :class:`requests.Session`)."""

    protocol = "dicomweb"

    def __init__(self, url: str, *, session: requests.Session | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout  # per read: a stalled server fails instead of hanging
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout)

    def __str__(self) -> str:
        return f"DICOMweb {self.url}"

    @contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        """Turn transport failures into one line naming the server and what was being done."""
        try:
            yield
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise PacsError(f"{self}: {doing}: the server answered HTTP {status}") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, ConnectionAbortedError) as exc:
            if "Connection refused" in str(exc):
                raise PacsError(f"{self}: {doing}: connection refused (is the server up?)") from None
            raise PacsError(f"{self}: {doing}: connection dropped mid-transfer") from None
        except requests.RequestException as exc:
            raise PacsError(f"{self}: {doing}: {type(exc).__name__}") from None
        except ValueError as exc:  # a malformed answer (JSON, multipart)
            raise PacsError(f"{self}: {doing}: malformed answer ({str(exc)[:100]})") from None

    def find(self, query: StudyQuery) -> Found:
        with self._talking("searching for the study (QIDO-RS)"):
            studies = self.client.search_for_studies(
                search_filters=query.keys(), fields=["StudyInstanceUID", "NumberOfStudyRelatedInstances"]
            )
        uid = one_study(self, query, [_value(s, "0020000D") for s in studies])
        count = next(_value(s, "00201208") for s in studies if _value(s, "0020000D") == uid)
        if not count.isdigit() or int(count) == 0:
            raise PacsError(f"{self}: study {uid}: the server does not say how many instances it holds")
        return Found(uid, int(count))

    def list_instances(self, found: Found) -> set[str]:
        with self._talking("listing the study's instances (QIDO-RS)"):
            return {_value(i, "00080018") for i in self.client.search_for_instances(found.study_uid)} - {""}

    def retrieve(self, found: Found) -> Iterator[bytes]:
        """The study's instances as stored, one multipart part at a time (WADO-RS)."""
        with self._talking("retrieving the study (WADO-RS)"):
            url = f"{self.url}/studies/{found.study_uid}"
            with self.session.get(url, headers={"Accept": ACCEPT_AS_STORED}, stream=True, timeout=self.timeout) as r:
                r.raise_for_status()
                yield from multipart_parts(r.headers.get("Content-Type", ""), r.iter_content(CHUNK))
