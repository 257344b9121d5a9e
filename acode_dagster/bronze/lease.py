"""One writer per (table, day): a lease kept in the bronze store itself.

Every path that writes a partition (a daemon run, ``dagster asset materialize``, ``acode sync``,
a backfill, catch-up, a release from quarantine) takes the partition's lease first and holds it
from staging to publish, so it holds across processes and machines without anything but the
store. The lease is one small JSON record per partition, changed only by compare-and-swap:

- on S3, a conditional write: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to renew or
  take over, a conditional delete to release;
- on a folder, the same operations done under ``flock`` on a lock file beside the record (the
  kernel drops the lock when its process dies, SIGKILL included).

A holder renews the record from a heartbeat thread. A record not renewed within its ``ttl_s`` has
expired (a crashed or paused writer) and the next writer takes it over by swapping it. A writer
learns that it lost its lease when a renewal's swap fails, and :meth:`Lease.ensure_held`
(a renewal) runs right before every step of a publish: a writer that was paused past its expiry,
while another took over and published, cannot publish over it (fencing). Expiry is judged on the
taker's wall clock against the holder's ``renewed_at``: clock skew between machines can only make
a taker early, which costs the early holder its publish (safety holds), never two publishers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from acode_dagster.errors import BronzeError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 120.0
DEFAULT_WAIT_S = 600.0


class LeaseBusy(BronzeError):
    """Another writer held the partition for longer than this one would wait."""

    def __init__(self, message: str, holder: Holder):
        super().__init__(message, transient=True)
        self.holder = holder


class LeaseLost(BronzeError):
    """This writer's lease expired and another writer took the partition over."""

    def __init__(self, message: str):
        # Not transient: the other writer's version stands; a retry would only replace it.
        super().__init__(message)


@dataclass(frozen=True)
class Holder:
    """Who writes: shown to every writer that waits for the partition."""

    run_id: str
    host: str
    pid: int
    purpose: str = "sync"

    @classmethod
    def here(cls, run_id: str, purpose: str = "sync") -> Holder:
        return cls(run_id=run_id, host=socket.gethostname(), pid=os.getpid(), purpose=purpose)

    def describe(self) -> str:
        return f"run {self.run_id} ({self.purpose}) on host {self.host}, pid {self.pid}"


@dataclass(frozen=True)
class LeaseRecord:
    token: str
    holder: Holder
    since: str
    """When the holder took the lease (ISO, UTC)."""
    renewed_at: str
    ttl_s: float

    def expires_at(self) -> datetime:
        return datetime.fromisoformat(self.renewed_at) + timedelta(seconds=self.ttl_s)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at()

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> LeaseRecord:
        raw = json.loads(body)
        return cls(**{**raw, "holder": Holder(**raw["holder"])})


class LeaseRecords(Protocol):
    """Compare-and-swap storage of one partition's lease record; ``tag`` is an opaque version
    (an S3 ETag, a hash of a file's bytes)."""

    where: str

    def create(self, body: bytes) -> str | None:
        """Write the record if there is none; its tag, or None when one exists."""

    def read(self) -> tuple[bytes, str] | None:
        """The record and its tag, or None."""

    def swap(self, body: bytes, tag: str) -> str | None:
        """Replace the record if its tag is still ``tag``; the new tag, or None."""

    def delete(self, tag: str) -> bool:
        """Remove the record if its tag is still ``tag``."""


def decode(body: bytes) -> LeaseRecord | None:
    """A record, or None for one that cannot be read (a torn write of an older version): such
    a record is treated as expired, so it can never block a partition for good."""
    try:
        record = LeaseRecord.from_json(body)
        # Its times must be readable too (ISO with an offset, a number of seconds): a record
        # that parses but whose expiry cannot be computed would otherwise block every writer.
        record.expired(_now())
    except (ValueError, TypeError, KeyError, OverflowError):
        return None
    return record


@dataclass(frozen=True)
class LeasePolicy:
    ttl_s: float = DEFAULT_TTL_S
    """A record not renewed for this long has expired."""
    wait_s: float = DEFAULT_WAIT_S
    """How long a writer waits for a busy partition before failing (transiently)."""
    poll_s: float = 1.0

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 4


def _now() -> datetime:
    return datetime.now(UTC)


class Lease:
    """A held lease. Use :func:`hold`; it renews, fences and releases."""

    def __init__(self, records: LeaseRecords, record: LeaseRecord, tag: str, name: str):
        self.records = records
        self.record = record
        self.name = name
        self._tag = tag
        self._lock = threading.Lock()
        self.lost: str | None = None

    def renew(self) -> None:
        """Extend the lease by a swap; LeaseLost when another writer took it over."""
        with self._lock:
            if self.lost:
                raise LeaseLost(self.lost)
            renewed = replace(self.record, renewed_at=_now().isoformat())
            tag = self.records.swap(renewed.to_json(), self._tag)
            if tag is None:
                current = self.records.read()
                taken = decode(current[0]) if current else None
                by = taken.holder.describe() if taken else "nobody (the record was removed)"
                self.lost = (
                    f"{self.name}: this writer ({self.record.holder.describe()}) lost its lease "
                    f"(not renewed within {self.record.ttl_s:g} s, ACODE_LEASE_TTL_S); it is now "
                    f"held by {by}. Nothing of this version was published; the other writer's "
                    "version stands"
                )
                raise LeaseLost(self.lost)
            self.record, self._tag = renewed, tag

    def ensure_held(self) -> None:
        """The fence: called before each step of a publish. A renewal, so the step that follows
        has a whole ``ttl_s`` before anyone may take the partition over."""
        self.renew()

    def release(self) -> None:
        with self._lock:
            if not self.lost:
                self.records.delete(self._tag)


def acquire(
    records: LeaseRecords,
    holder: Holder,
    policy: LeasePolicy,
    name: str,
    *,
    log_wait: Callable[[str], None] = log.info,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Take the lease of ``name``, waiting up to ``policy.wait_s`` for a live holder.

    LeaseBusy (transient, so the run's retry policy handles it) names the holder."""
    deadline = time.monotonic() + policy.wait_s
    announced = False
    while True:
        now = _now()
        record = LeaseRecord(
            uuid.uuid4().hex, holder, now.isoformat(), now.isoformat(), policy.ttl_s
        )
        tag = records.create(record.to_json())
        if tag is not None:
            return Lease(records, record, tag, name)
        current = records.read()
        if current is None:
            continue  # released between our create and read: try again at once
        body, current_tag = current
        held = decode(body)
        if held is None or held.expired(now):
            tag = records.swap(record.to_json(), current_tag)
            if tag is not None:
                if held is not None:
                    log_wait(
                        f"{name}: took over the expired lease of {held.holder.describe()} "
                        f"(last renewed {held.renewed_at})"
                    )
                return Lease(records, record, tag, name)
            continue  # someone renewed or took it in between: look again
        # Said first, even when the first look outlasted the wait (a slow store): whoever
        # reads the log learns whom this writer waited for.
        if not announced:
            announced = True
            log_wait(
                f"{name} is being written by {held.holder.describe()} since {held.since}; "
                f"waiting up to {policy.wait_s:g} s for it"
            )
        if time.monotonic() >= deadline:
            raise LeaseBusy(
                f"{name} is being written by {held.holder.describe()} since {held.since} "
                f"(lease renewed {held.renewed_at}, expires {held.expires_at().isoformat()}); "
                f"waited {policy.wait_s:g} s (ACODE_LEASE_WAIT_S). The run retries on its own; "
                f"the lease is {records.where}",
                held.holder,
            )
        sleep(policy.poll_s)


@contextmanager
def hold(
    records: LeaseRecords,
    holder: Holder,
    policy: LeasePolicy,
    name: str,
    *,
    log_wait: Callable[[str], None] = log.info,
) -> Iterator[Lease]:
    """The lease of ``name`` for the duration of the block, renewed every ``ttl_s / 4`` by a
    heartbeat thread, released at the end (also on error). A crashed process's lease expires."""
    lease = acquire(records, holder, policy, name, log_wait=log_wait)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(policy.renew_every_s):
            try:
                lease.renew()
            except LeaseLost:
                return
            except BronzeError as exc:
                # A store hiccup: the next beat tries again, and the fence before the publish
                # renews synchronously anyway.
                log.warning("%s: could not renew the lease: %s", name, exc)

    beat = threading.Thread(target=heartbeat, name=f"lease {name}", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()
        try:
            lease.release()
        except BronzeError as exc:
            log.warning("%s: could not release the lease (it expires by itself): %s", name, exc)
