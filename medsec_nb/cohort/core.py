"""``Cohort``: many encrypted studies analysed on dask.distributed workers, with audited,
differentially private releases."""

from __future__ import annotations

import html
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..access.gate import EVENT_EXPORT, as_log, as_policy, resolve_purpose
from ..access.policy import Policy
from ..audit import AuditLog
from ..container import remote
from ..core.errors import MedsecError
from ..keys.identity import Identity, Passphrase, as_identity
from . import transport as wkeys
from .forward import AuditSink
from .privacy import PRIVACY_UNIT, PrivacyAccountant, check_release, dp_mean
from .task import Item, message, run_batch

#: Dask settings for the workers of a cohort's own LocalCluster: no statistical profiler (it
#: samples every worker thread's stack 100 times a second, about 4 % of a worker's CPU here).
_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}  # dotted: the nanny merges top-level keys
#: Rounds of re-granting for tasks that reached a worker their key was not wrapped to.
_GRANT_ROUNDS = 3
#: The largest batch of studies in one Dask task (a worker lost mid-batch reruns all of it).
MAX_BATCH = 16


@dataclass
class CohortResult:
    """``values``: one per study, in study order (None where the study failed);
    ``errors``: study -> a clear message for each study that failed."""

    studies: list[str]
    values: list[Any]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> list[Any]:
        """Values of the studies that succeeded, in study order."""
        return [v for s, v in zip(self.studies, self.values) if s not in self.errors]

    def __repr__(self) -> str:
        return f"<CohortResult {len(self.studies) - len(self.errors)} ok, {len(self.errors)} failed>"


def batch_size_for(remaining: int, slots: int, sent: int = 0) -> int:
    """Studies in the next batch, after ``sent`` batches: half of each worker thread's share
    of what remains, at most :data:`MAX_BATCH` ("factoring"), so batches shrink to single
    studies as the run ends and the workers finish together; and at most ``2 ** sent``, so the
    first task goes out after one key grant, not a whole batch of them."""
    return max(1, min(MAX_BATCH, 2 ** min(sent, 8), math.ceil(remaining / (2 * slots))))


class Cohort:
    """Encrypted studies (local paths or fsspec URLs) analysed on a Dask cluster.

    Build it with :meth:`from_glob`; use it as a context manager (or call :meth:`close`) to stop
    the audit sink and, when the cohort started it, the local cluster."""

    def __init__(
        self,
        studies: Sequence[str],
        identity: Identity,
        purpose: str,
        client: Any,
        *,
        purpose_text: str | None = None,
        storage_options: dict[str, Any] | None = None,
        audit_log: AuditLog | str | os.PathLike | None = None,
        policy: Policy | str | os.PathLike | None = None,
        epsilon_budget: float = 1.0,
        own_client: bool = False,
    ):
        self.client = client
        self._own_client = own_client
        try:  # a cluster this cohort started must not outlive a bad argument
            self.studies = list(studies)
            self.purpose = resolve_purpose(purpose)
            self.purpose_text = purpose_text
            self.storage_options = storage_options
            self.log = as_log(audit_log)
            self.policy = as_policy(policy)
            self.budget = PrivacyAccountant(epsilon_budget)
            self._identity = identity
            self._sink = AuditSink(self.log, key_id=identity.key_id, purpose=self.purpose, purpose_text=purpose_text)
            self._sink.start(client)
        except BaseException:
            self._close_client()
            raise

    @classmethod
    def from_glob(
        cls,
        pattern: str,
        identity: Identity | str | os.PathLike,
        purpose: str | None = None,
        client: Any = None,
        *,
        identity_passphrase: Passphrase = None,
        purpose_text: str | None = None,
        storage_options: dict[str, Any] | None = None,
        audit_log: AuditLog | str | os.PathLike | None = None,
        policy: Policy | str | os.PathLike | None = None,
        epsilon_budget: float = 1.0,
        n_workers: int | None = None,
    ) -> Cohort:
        """The studies matching ``pattern`` (``data/*.msec``, ``s3://bucket/x/*.msec``), in sorted
        order. ``client``: a ``distributed.Client`` (any scheduler); default a new LocalCluster
        with ``n_workers`` single-threaded worker processes (Dask's profiler off). ``identity`` (a key file or
        Identity) stays in this process. ``epsilon_budget``: the cohort's privacy budget."""
        ident = as_identity(identity, identity_passphrase)
        resolve_purpose(purpose)  # argument errors before any cluster starts
        PrivacyAccountant(epsilon_budget)
        try:
            studies = remote.glob(pattern, storage_options)
        except (OSError, ValueError, ImportError) as exc:
            raise MedsecError(f"{pattern}: cannot list ({type(exc).__name__}: {exc})") from None
        if not studies:
            raise MedsecError(f"{pattern}: no study matches")
        own = client is None
        if own:
            from distributed import Client, LocalCluster

            cluster = LocalCluster(
                n_workers=n_workers or min(os.cpu_count() or 1, 4),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                config=_WORKER_CONFIG,
            )
            client = Client(cluster)
        return cls(
            studies,
            ident,
            purpose,
            client,
            purpose_text=purpose_text,
            storage_options=storage_options,
            audit_log=audit_log,
            policy=policy,
            epsilon_budget=epsilon_budget,
            own_client=own,
        )

    # ------------------------------------------------------------ running

    def _grant(self, i: int, transport: wkeys.Transport) -> dict[str, str]:
        """Study ``i``'s key sealed for the workers of ``transport``."""
        return wkeys.grant(
            self.studies[i],
            self._identity,
            transport,
            purpose=self.purpose,
            storage_options=self.storage_options,
            audit_log=self.log,
            policy=self.policy,
        )

    def _submit(self, items: list[Item], fn: Callable[[Any], Any], public: tuple) -> Any:
        """One batch as one Dask task; ``public``: the round's ``Transport.public()``."""
        return self.client.submit(
            run_batch,
            items,
            (self._sink.address, self._sink.token),
            fn,
            transport=public,
            purpose=self.purpose,
            purpose_text=self.purpose_text,
            key_id=self._identity.key_id,
            storage_options=self.storage_options,
            key=f"medsec-studies-{items[0][0]}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )

    def _send(
        self, todo: list[int], fn: Callable[[Any], Any], batch_size: int | None, errors: dict[str, str], bar: Any
    ) -> dict[Any, list[Item]]:
        """One grant round: a transport for the current workers, then studies ``todo`` granted
        and submitted batch by batch (each goes out as soon as its keys are sealed). A study
        whose grant fails (denied, unreadable) goes to ``errors``. Returns {future: its items}."""
        transport = wkeys.Transport.new(
            wkeys.worker_recipients(list(self.client.run(wkeys.worker_public_pem).values()))
        )
        public = transport.public()
        slots = sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()) or 1
        futures: dict[Any, list[Item]] = {}
        while todo:
            size = batch_size or batch_size_for(len(todo), slots, len(futures))
            batch, todo = todo[:size], todo[size:]
            items = []
            for i in batch:
                try:
                    items.append((i, self.studies[i], self._grant(i, transport)))
                except MedsecError as exc:
                    errors[self.studies[i]] = message(exc)
                    bar.update(1)
            if items:
                futures[self._submit(items, fn, public)] = items
        return futures

    def _collect(
        self, futures: dict[Any, list[Item]], values: list[Any], errors: dict[str, str], bar: Any
    ) -> list[int]:
        """Each batch's results into ``values`` / ``errors`` as it completes; a task that failed
        as a whole fails each of its studies. Returns the studies to grant again (their task
        reached a worker their keys were not sealed for)."""
        from distributed import as_completed

        regrant: list[int] = []
        for fut in as_completed(list(futures)):
            items = futures[fut]
            exc = fut.exception() if fut.status == "error" else None
            done = fut.result() if exc is None else [(i, False, message(exc)) for i, _, _ in items]
            fut.release()
            if isinstance(exc, wkeys.WorkerKeyMissingError):
                regrant.extend(i for i, _, _ in items)
                continue
            for i, ok, value in done:
                if ok:
                    values[i] = value
                else:
                    errors[self.studies[i]] = value
            bar.update(len(done))
        return regrant

    def map(
        self, fn: Callable[[Any], Any], *, progress: bool | None = None, batch_size: int | None = None
    ) -> CohortResult:
        """``fn(study)`` for every study, on the workers; a study that fails (tampered,
        unreadable, denied, or ``fn`` raised) is reported in ``errors`` and the rest complete.

        Studies go to the workers in batches (one Dask task each; :func:`batch_size_for`) that
        grow from one study and shrink towards the end of the run so the workers finish
        together; ``batch_size`` fixes the size. Within a batch the next study is opened while
        ``fn`` computes on the current one."""
        from tqdm.auto import tqdm

        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise MedsecError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        values: list[Any] = [None] * len(self.studies)
        errors: dict[str, str] = {}
        todo = list(range(len(self.studies)))
        bar = tqdm(total=len(todo), unit="study", desc="cohort", disable=None if progress is None else not progress)
        try:
            for _ in range(_GRANT_ROUNDS):
                futures = self._send(todo, fn, batch_size, errors, bar)
                todo = sorted(self._collect(futures, values, errors, bar))
                if not todo:
                    break
            for i in todo:
                errors[self.studies[i]] = (
                    f"{self.studies[i]}: no worker could take the study key (workers kept changing)"
                )
        finally:
            bar.close()
        return CohortResult(list(self.studies), values, dict(sorted(errors.items())))

    # ------------------------------------------------------------ releasing

    def release_mean(self, result: CohortResult, *, bounds: tuple[float, float], epsilon: float) -> float:
        """The mean of ``result``'s values, clamped to ``bounds`` (required, fixed in advance),
        with Laplace noise for ``epsilon``-differential privacy (OpenDP). The epsilon is charged
        to this cohort's budget first, and the released value is recorded in the audit log
        before it is returned. Failed studies are left out (the count of studies is public)."""
        lo, hi, eps = check_release(bounds, epsilon)
        vals = []
        for s, v in zip(result.studies, result.values):
            if s in result.errors:
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                x = float("nan")
            if not math.isfinite(x):
                raise MedsecError(f"{s}: value is not a finite number; release_mean needs one number per study")
            vals.append(x)
        if not vals:
            raise MedsecError("release_mean: no study produced a value")
        self.budget.spend(eps)
        value, scale = dp_mean(vals, lo, hi, eps)
        self.log.append(
            action="dp-release",
            outcome="success",
            event=EVENT_EXPORT,
            purpose=self.purpose,
            purpose_text=self.purpose_text,
            key_id=self._identity.key_id,
            detail={
                "statistic": "mean",
                "mechanism": "laplace (OpenDP)",
                "value": repr(value),
                "n": len(vals),
                "bounds": [repr(lo), repr(hi)],
                "epsilon": repr(eps),
                "scale": repr(scale),
                "privacy_unit": PRIVACY_UNIT,
                "budget_spent": repr(self.budget.spent),
                "budget_total": repr(self.budget.total),
            },
        )
        return value

    # ------------------------------------------------------------ lifecycle and display

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)

    def __len__(self) -> int:
        return len(self.studies)

    def _close_client(self) -> None:
        if self._own_client:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()

    def close(self) -> None:
        """Stop the audit sink; close the cluster if this cohort started it."""
        if self._sink.server is not None:
            self._sink.close(self.client)
            self._close_client()

    def __enter__(self) -> Cohort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_html_(self) -> str:
        link = self.dashboard_link
        dash = f'<a href="{html.escape(link)}" target="_blank">{html.escape(link)}</a>' if link else "not available"
        workers = len(self.client.scheduler_info().get("workers", {}))
        return (
            f"<b>Cohort</b>: {len(self.studies)} encrypted studies, purpose {html.escape(self.purpose)}, "
            f"{workers} Dask workers<br>Dask dashboard: {dash}<br>"
            f"privacy budget: {self.budget.spent:g} of {self.budget.total:g} spent"
        )

    def __repr__(self) -> str:
        return f"<Cohort {len(self.studies)} studies, purpose {self.purpose}, dashboard {self.dashboard_link}>"
