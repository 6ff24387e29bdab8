"""A DICOMweb server as a pull source: QIDO-RS finds the study and its instances, WADO-RS streams them.

The study is retrieved in one multipart WADO-RS response with ``transfer-syntax=*`` (each instance as the
server stores it) and each part is handed on as soon as it has arrived: memory holds one instance at a time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient

from ..audit.record import is_uid
from .peer import Found, PacsError, StudyQuery, one_study, public_url

ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Bytes read from the network at a time.
CHUNK = 1 << 20
#: The largest instance a pull accepts by default (memory holds one instance at a time).
MAX_PART = 1 << 30
#: Part headers longer than this are refused.
MAX_HEADERS = 16 << 10
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_LENGTH = re.compile(rb"^content-length:[ \t]*([0-9]+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


def _declared_length(buf: bytearray, start: int) -> int | None:
    """The Content-Length of the part whose headers begin at ``start``, once they have arrived (else None);
    ValueError if they run on too long."""
    end = buf.find(b"\r\n\r\n", start, start + MAX_HEADERS)
    if end < 0:
        if len(buf) - start > MAX_HEADERS:
            raise ValueError("a part whose headers do not end")
        return None
    match = _LENGTH.search(bytes(buf[start:end]))
    return int(match.group(1)) if match else -1


def multipart_parts(content_type: str, chunks: Iterator[bytes], max_part: int = MAX_PART) -> Iterator[bytes]:
    """The bodies of a ``multipart/related`` message as they arrive; ValueError if it is not one or a part is
    larger than ``max_part`` bytes (by its Content-Length header or as it arrives), and
    :class:`ConnectionAbortedError` if it ends before its closing boundary (the peer went away)."""
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/related") or not match:
        raise ValueError(f"not a multipart/related answer ({content_type[:60]!r})")
    delim = b"\r\n--" + match.group(1).encode()
    too_big = f"an instance larger than the limit of {max_part} bytes"
    buf, scan, first, declared = bytearray(b"\r\n"), 0, True, None
    while True:
        if not first and declared is None:
            declared = _declared_length(buf, 0)
        if (declared or 0) > max_part:
            raise ValueError(too_big)
        i = buf.find(delim, scan)
        if i < 0 or len(buf) < i + len(delim) + 2:
            if len(buf) > max_part + MAX_HEADERS + len(delim) + 2:  # buf holds only this part
                raise ValueError(too_big)
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
        scan, declared = 0, None


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _printable(text: str) -> str:
    """Peer-supplied text made safe for a terminal line: anything but printable ASCII becomes ``?``."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


def auth_session(user: str | None = None, password: str | None = None, token: str | None = None) -> requests.Session:
    """A :class:`requests.Session` that authenticates with HTTP basic (``user``, ``password``) or a bearer
    ``token`` (or neither)."""
    session = requests.Session()
    if user is not None:
        session.auth = (user, password or "")
    elif token is not None:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


class DicomWeb:
    """The DICOMweb service at ``url`` (e.g. ``https://pacs.example/dicom-web``); ``session`` carries any
    authentication the server needs (see :func:`auth_session`). ``timeout`` bounds each read, ``max_time``
    (seconds, optional) the whole retrieve, ``max_instance`` the bytes of one instance."""

    protocol = "dicomweb"

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        timeout: float = 60.0,
        max_time: float | None = None,
        max_instance: int = MAX_PART,
    ):
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout  # per read: a stalled server fails instead of hanging
        self.max_time, self.max_instance = max_time, max_instance
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout)
        self.client.set_http_retry_params(retry=False)  # a failed pull is retried by running it again

    def __str__(self) -> str:
        return f"DICOMweb {public_url(self.url)}"

    @contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        """Turn transport failures into one line naming the server and what was being done."""
        try:
            yield
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            hint = " (check the user and password or token)" if status in (401, 403) else ""
            raise PacsError(f"{self}: {doing}: the server answered HTTP {status}{hint}") from None
        except requests.Timeout:
            raise PacsError(f"{self}: {doing}: no answer within {self.timeout:g} s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, ConnectionAbortedError) as exc:
            if "Connection refused" in str(exc):
                raise PacsError(f"{self}: {doing}: connection refused (is the server up?)") from None
            raise PacsError(f"{self}: {doing}: connection dropped mid-transfer") from None
        except requests.RequestException as exc:
            raise PacsError(f"{self}: {doing}: {type(exc).__name__}") from None
        except ValueError as exc:  # a malformed answer (JSON, multipart)
            raise PacsError(f"{self}: {doing}: malformed answer ({_printable(str(exc)[:100])})") from None
        except TimeoutError:
            raise PacsError(f"{self}: {doing}: not done within {self.max_time:g} s (--max-time)") from None

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
            listed = {_value(i, "00080018") for i in self.client.search_for_instances(found.study_uid)} - {""}
        return {uid for uid in listed if is_uid(uid)}  # anything else is not repeated in messages

    def retrieve(self, found: Found) -> Iterator[bytes]:
        """The study's instances as stored, one multipart part at a time (WADO-RS)."""
        deadline = time.monotonic() + (self.max_time or 0.0)
        with self._talking("retrieving the study (WADO-RS)"):
            url = f"{self.url}/studies/{found.study_uid}"
            with self.session.get(url, headers={"Accept": ACCEPT_AS_STORED}, stream=True, timeout=self.timeout) as r:
                r.raise_for_status()
                expired = threading.Event()
                timer = None
                if self.max_time is not None:  # the whole retrieve, however slowly the server drips

                    def expire() -> None:
                        expired.set()
                        r.raw.shutdown()  # urllib3: ends a read blocked in another thread

                    timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
                    timer.daemon = True
                    timer.start()
                try:
                    yield from multipart_parts(
                        r.headers.get("Content-Type", ""), r.iter_content(CHUNK), self.max_instance
                    )
                except Exception:
                    if expired.is_set():
                        raise TimeoutError from None
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
