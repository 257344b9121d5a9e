"""The partition lease on both kinds of records: a folder (flock) and S3 (conditional writes on
moto's HTTP server, made atomic like S3's by support/moto_atomic.py).

Invariant 1, the part the lease owns: of the writers of one (table, day), at most one believes
it holds a live lease, and one that lost it can neither publish (its fence raises) nor remove the
new holder's record.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from acode_dagster.bronze import lease as lease_module
from acode_dagster.bronze.lease import (
    Holder,
    Lease,
    LeaseBusy,
    LeaseLost,
    LeasePolicy,
    LeaseRecord,
    LeaseRecords,
    acquire,
    decode,
    hold,
)
from acode_dagster.bronze.store import FileLeaseRecords, LocalStore, S3LeaseRecords, S3Store
from acode_dagster.tables import FISCAL_LINES

DAY = date(2026, 11, 20)
NAME = f"{FISCAL_LINES.name} {DAY:%Y-%m-%d}"
A = Holder(run_id="run-a-7f3e", host="host-a", pid=1111, purpose="schedule daily")
B = Holder(run_id="run-b-51c0", host="host-b", pid=2222, purpose="sync")
C = Holder(run_id="run-c-9d2a", host="host-c", pid=3333, purpose="backfill x")
LONG = LeasePolicy(ttl_s=60, wait_s=0, poll_s=0.05)
"""A lease that does not expire during a test, taken without waiting."""


@pytest.fixture(params=["folder", "s3"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> LeaseRecords:
    """The lease record of one partition, where each store keeps it."""
    if request.param == "folder":
        return LocalStore(tmp_path / "bronze").lease_records(FISCAL_LINES, DAY)
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, "lake").lease_records(FISCAL_LINES, DAY)


def twin(records: LeaseRecords) -> LeaseRecords:
    """The same record seen by another writer (its own S3 client, its own file handles)."""
    if isinstance(records, FileLeaseRecords):
        return FileLeaseRecords(records.path)
    assert isinstance(records, S3LeaseRecords)
    return S3Store(records.store.bucket, records.store.prefix).lease_records(FISCAL_LINES, DAY)


def token_in_store(records: LeaseRecords) -> str | None:
    current = records.read()
    if current is None:
        return None
    held = decode(current[0])
    return held.token if held else "<undecodable>"


# --------------------------------------------------------------------------- busy, release


def test_a_second_writer_waits_then_fails_busy_naming_the_holder(records: LeaseRecords) -> None:
    first = acquire(records, A, LONG, NAME)
    waited: list[str] = []
    started = time.monotonic()
    with pytest.raises(LeaseBusy) as caught:
        acquire(
            twin(records),
            B,
            LeasePolicy(ttl_s=60, wait_s=0.8, poll_s=0.1),
            NAME,
            log_wait=waited.append,
        )
    elapsed = time.monotonic() - started
    busy = caught.value
    message = str(busy)
    assert elapsed >= 0.8
    assert busy.transient, "a busy partition is retried by the run's retry policy"
    assert busy.holder == A
    for named in (A.run_id, A.host, str(A.pid), A.purpose, first.record.since):
        assert named in message, (named, message)
    assert NAME in message and "ACODE_LEASE_WAIT_S" in message and records.where in message
    # It said once, when it started waiting, whom it was waiting for.
    assert len(waited) == 1 and A.run_id in waited[0] and "waiting up to 0.8 s" in waited[0]
    assert token_in_store(records) == first.record.token
    first.release()
    assert records.read() is None


def test_release_lets_the_next_take_it_at_once(records: LeaseRecords) -> None:
    first = acquire(records, A, LONG, NAME)
    first.release()
    started = time.monotonic()
    second = acquire(twin(records), B, LONG, NAME)
    assert time.monotonic() - started < 5
    assert token_in_store(records) == second.record.token
    # A waiter gets the partition as soon as the holder lets go, not when its lease expires.
    releaser = threading.Timer(0.5, second.release)
    releaser.start()
    started = time.monotonic()
    third = acquire(records, C, LeasePolicy(ttl_s=60, wait_s=30, poll_s=0.05), NAME)
    waited = time.monotonic() - started
    releaser.join()
    assert 0.4 <= waited < 10
    assert token_in_store(records) == third.record.token
    third.release()
    assert records.read() is None


# --------------------------------------------------------------------------- expiry, fencing


def test_an_expired_lease_is_taken_over_and_its_old_holder_is_fenced(
    records: LeaseRecords,
) -> None:
    old = acquire(records, A, LeasePolicy(ttl_s=0.3, wait_s=0), NAME)
    time.sleep(0.5)  # A paused (or dead) past its expiry
    logged: list[str] = []
    new = acquire(twin(records), B, LONG, NAME, log_wait=logged.append)
    assert token_in_store(records) == new.record.token
    assert any("took over the expired lease" in line and A.run_id in line for line in logged)

    for step in (old.renew, old.ensure_held):
        with pytest.raises(LeaseLost) as caught:
            step()
        assert not caught.value.transient
        assert B.run_id in str(caught.value) and "ACODE_LEASE_TTL_S" in str(caught.value)
    old.release()
    assert token_in_store(records) == new.record.token, "a fenced writer removed the new lease"

    new.renew()
    new.ensure_held()
    assert token_in_store(records) == new.record.token
    new.release()
    assert records.read() is None


def test_a_holder_whose_record_vanished_is_fenced_too(records: LeaseRecords) -> None:
    """Its record expired, was taken over and released by the taker: nobody holds it now, and
    the old holder must still not publish (its version was never the one to keep)."""
    old = acquire(records, A, LeasePolicy(ttl_s=0.3, wait_s=0), NAME)
    time.sleep(0.5)
    acquire(twin(records), B, LONG, NAME).release()
    with pytest.raises(LeaseLost, match="nobody"):
        old.ensure_held()
    old.release()
    assert records.read() is None
    acquire(records, C, LONG, NAME).release()


def test_an_expired_lease_not_taken_over_is_still_its_holders(records: LeaseRecords) -> None:
    late = acquire(records, A, LeasePolicy(ttl_s=0.3, wait_s=0), NAME)
    time.sleep(0.5)
    late.ensure_held()  # nobody took it: the renewal makes it live again
    with pytest.raises(LeaseBusy):
        acquire(twin(records), B, LONG, NAME)
    late.release()
    assert records.read() is None


TORN = [
    pytest.param(b"", id="empty"),
    pytest.param(b'{"holder": {"run_id": "run-x", "host": "h', id="truncated"),
    pytest.param(b"\x00\xff\xfe garbage", id="binary"),
    pytest.param(b'["a", "list"]', id="not-an-object"),
    pytest.param(b'{"token": "t", "holder": {"run_id": "r"}}', id="missing-fields"),
    pytest.param(
        b'{"token": "t", "holder": {"run_id": "r", "host": "h", "pid": 1, "purpose": "p"}, '
        b'"since": "2026-11-20T00:00:00+00:00", "renewed_at": "2026-11-2", "ttl_s": 60}',
        id="mangled-time",
    ),
    pytest.param(
        b'{"token": "t", "holder": {"run_id": "r", "host": "h", "pid": 1, "purpose": "p"}, '
        b'"since": "2026-11-20T00:00:00", "renewed_at": "2099-11-20T00:00:00", "ttl_s": 60}',
        id="time-without-offset",
    ),
]


@pytest.mark.parametrize("body", TORN)
def test_a_torn_record_counts_as_expired(records: LeaseRecords, body: bytes) -> None:
    assert records.create(body) is not None
    assert decode(body) is None
    taken = acquire(twin(records), B, LONG, NAME)
    assert token_in_store(records) == taken.record.token
    taken.release()
    assert records.read() is None


# --------------------------------------------------------------------------- heartbeat


def test_the_heartbeat_keeps_the_lease_alive_past_several_ttls(records: LeaseRecords) -> None:
    policy = LeasePolicy(ttl_s=1.0, wait_s=0)
    other = twin(records)
    with hold(records, A, policy, NAME) as held:
        first_renewal = held.record.renewed_at
        deadline = time.monotonic() + 3 * policy.ttl_s
        refused = 0
        while time.monotonic() < deadline:
            with pytest.raises(LeaseBusy):
                acquire(other, B, LeasePolicy(ttl_s=60, wait_s=0), NAME)
            refused += 1
            time.sleep(0.2)
        held.ensure_held()
        assert held.record.renewed_at > first_renewal
        assert token_in_store(records) == held.record.token
    assert refused > 5
    assert records.read() is None, "the lease is released when the block ends"


def test_the_lease_is_released_when_the_block_fails(records: LeaseRecords) -> None:
    with contextlib.suppress(RuntimeError), hold(records, A, LONG, NAME):
        raise RuntimeError("the sync failed")
    assert records.read() is None


def test_a_heartbeat_that_finds_its_lease_taken_over_leaves_the_new_record(
    records: LeaseRecords,
) -> None:
    """Another writer swaps the record (what a take-over after a pause does): the holder's
    heartbeat learns it lost the lease, its fence refuses, and leaving the block keeps the new
    holder's record."""
    policy = LeasePolicy(ttl_s=1.0, wait_s=0)
    now = datetime.now(UTC).isoformat()
    taken = LeaseRecord("token-of-b", B, now, now, 60)
    with pytest.raises(LeaseLost), hold(records, A, policy, NAME) as held:
        other = twin(records)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = other.read()
            assert current is not None
            if other.swap(taken.to_json(), current[1]) is not None:
                break  # else the heartbeat renewed in between: take the fresh record
        deadline = time.monotonic() + 30
        while held.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.lost is not None and B.run_id in held.lost
        held.ensure_held()
    assert token_in_store(records) == "token-of-b"


# --------------------------------------------------------------------------- real races


def race(clients: list[LeaseRecords], policy: LeasePolicy) -> tuple[list[Lease], list[LeaseBusy]]:
    """Every holder calls acquire at the same moment, each through its own client."""
    won: list[Lease] = []
    busy: list[LeaseBusy] = []
    start = threading.Barrier(len(clients))

    def one(holder: Holder, mine: LeaseRecords) -> None:
        start.wait()
        try:
            won.append(acquire(mine, holder, policy, NAME))
        except LeaseBusy as exc:
            busy.append(exc)

    threads = [
        threading.Thread(target=one, args=(h, c)) for h, c in zip(HOLDERS, clients, strict=False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return won, busy


HOLDERS = [Holder(f"run-{n}", f"host-{n}", 100 + n) for n in range(5)]


def test_racing_writers_exactly_one_wins(records: LeaseRecords) -> None:
    clients = [twin(records) for _ in HOLDERS]
    for _round in range(10):
        won, busy = race(clients, LONG)
        assert len(won) == 1 and len(busy) == len(HOLDERS) - 1
        [winner] = won
        assert token_in_store(records) == winner.record.token
        assert all(b.holder == winner.record.holder for b in busy)
        winner.release()
        assert records.read() is None


def test_racing_takers_of_an_expired_lease_exactly_one_wins(records: LeaseRecords) -> None:
    """The take-over is a swap (If-Match on S3): of several writers finding the same expired
    record, one swaps it, the others see a live lease."""
    clients = [twin(records) for _ in HOLDERS]
    for _round in range(8):
        dead = acquire(records, A, LeasePolicy(ttl_s=0.2, wait_s=0), NAME)
        time.sleep(0.3)
        won, busy = race(clients, LONG)
        assert len(won) == 1 and len(busy) == len(HOLDERS) - 1
        [winner] = won
        assert token_in_store(records) == winner.record.token
        with pytest.raises(LeaseLost):
            dead.ensure_held()
        winner.release()
        assert records.read() is None


# --------------------------------------------------------------------------- interleavings

TTL_MS = 1000
NUMBERS = st.sampled_from(range(3))


class LeaseInterleavings(RuleBasedStateMachine):
    """Three holders acquiring, renewing, releasing and pausing (the clock jumping) in any order,
    on a folder's records, with the lease's clock (``lease._now``) under the test's control.

    A holder *believes it holds a live lease* when it has a lease it was not told it lost, whose
    last renewal (as it knows it) is younger than the ttl. At most one holder ever does, and then
    the record in the store is that holder's; a renewal succeeds only on one's own record; a
    release never removes someone else's."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="acode-lease-"))
        self.records = FileLeaseRecords(self.folder / "cog_dt_ingestion=2026-11-20.json")
        self.now = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
        self.leases: dict[int, Lease] = {}
        self.clock = mock.patch.object(lease_module, "_now", lambda: self.now)
        self.clock.start()
        self.policy = LeasePolicy(ttl_s=TTL_MS / 1000, wait_s=0, poll_s=0)

    def teardown(self) -> None:
        self.clock.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def believes_live(self, number: int) -> bool:
        lease = self.leases.get(number)
        return lease is not None and not lease.lost and self.now < lease.record.expires_at()

    @rule(number=NUMBERS)
    def take(self, number: int) -> None:
        if number in self.leases:
            return
        others_live = [n for n in self.leases if self.believes_live(n)]
        try:
            self.leases[number] = acquire(
                self.records,
                Holder(f"run-{number}", "host", number),
                self.policy,
                NAME,
                log_wait=lambda _: None,
                sleep=lambda _: None,
            )
        except LeaseBusy as busy:
            assert busy.holder.pid != number
            return
        assert not others_live, f"{number} acquired while {others_live} held a live lease"

    @rule(number=NUMBERS)
    def renew(self, number: int) -> None:
        lease = self.leases.get(number)
        if lease is None:
            return
        try:
            lease.ensure_held()
        except LeaseLost:
            assert token_in_store(self.records) != lease.record.token
            return
        assert token_in_store(self.records) == lease.record.token

    @rule(number=NUMBERS)
    def release(self, number: int) -> None:
        lease = self.leases.pop(number, None)
        if lease is None:
            return
        before = token_in_store(self.records)
        lease.release()
        after = token_in_store(self.records)
        if before == lease.record.token and not lease.lost:
            assert after is None
        else:
            assert after == before, "a holder removed a record that was not its own"

    @rule(ms=st.integers(0, 2 * TTL_MS))
    def time_passes(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)

    @precondition(
        lambda self: (
            self.records.read() is not None and not any(self.believes_live(n) for n in self.leases)
        )
    )
    @rule()
    def an_abandoned_record_is_torn(self) -> None:
        current = self.records.read()
        assert current is not None
        assert self.records.swap(b'{"token": "torn', current[1]) is not None

    @invariant()
    def at_most_one_believes_it_holds_a_live_lease(self) -> None:
        live = [n for n in self.leases if self.believes_live(n)]
        assert len(live) <= 1, f"holders {live} all believe they hold the lease"
        if live:
            assert token_in_store(self.records) == self.leases[live[0]].record.token


LeaseInterleavings.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lease_interleavings = LeaseInterleavings.TestCase
