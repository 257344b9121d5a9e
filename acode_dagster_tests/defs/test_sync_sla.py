"""The sync-duration SLA end to end: a real bronze sync held by a locked source table, past both
thresholds, watched by the real alert tick, with loopback Slack and PagerDuty."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster.defs.alerts.resources import AlertingResource
from acode_dagster.defs.alerts.sensors import TickResult, alert_tick
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.localstack import LocalStack
from acode_dagster.observability.sla import SLA_MINUTES_TAG, SLA_TAG, dedup_key
from acode_dagster.tables import FISCAL_LINES, last_complete_days
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack
from acode_dagster_tests.support.platform import (
    Platform,
    metadata_of,
    started_platform,
    wait_for,
)

DAY = last_complete_days(1)[0]
# Minutes, in seconds' worth: 6 s and 9 s. The early tick must come before the first.
WARN_MINUTES, ERROR_MINUTES = 0.1, 0.15
TABLE = FISCAL_LINES.name


@pytest.fixture
def platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mariadb_pair_factory: Callable[..., LocalStack],
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> Iterator[Platform]:
    settings = {
        "ACODE_SYNC_WARN_MINUTES": str(WARN_MINUTES),
        "ACODE_SYNC_ERROR_MINUTES": str(ERROR_MINUTES),
    }
    with started_platform(
        tmp_path,
        monkeypatch,
        mariadb_pair_factory,
        slack_server,
        pagerduty_server,
        settings=settings,
        days=[DAY],
        rows={TABLE: 200},
    ) as started:
        yield started


class Ticker:
    """The alert sensor's tick, its cursor carried from one tick to the next."""

    def __init__(self, platform: Platform, alerting: AlertingResource) -> None:
        self.instance = platform.instance
        self.cursor = platform.alert_cursor  # alerting started with the platform
        self.alerting = alerting
        self.log: list[str] = []

    def tick(self) -> TickResult:
        result = alert_tick(self.instance, self.cursor, self.alerting, self.log.append)
        self.cursor = result.cursor
        return result


def _blocked_queries(platform: Platform) -> list[str]:
    """The source's queries waiting for a lock on the table."""
    connection = platform.stack.endpoint("primary", admin=True).connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT INFO FROM information_schema.PROCESSLIST "
                "WHERE STATE LIKE %s AND ID <> CONNECTION_ID()",
                ("%lock%",),
            )
            return [str(row[0]) for row in cursor.fetchall() if row[0]]
    finally:
        connection.close()


def _started_at(instance: dg.DagsterInstance) -> tuple[str, float] | None:
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in records:
        if record.start_time is not None:
            return record.dagster_run.run_id, record.start_time
    return None


class Services:
    """What reached the loopback Slack and PagerDuty so far."""

    def __init__(self, slack: LoopbackSlack, pagerduty: LoopbackPagerDuty) -> None:
        self.slack, self.pagerduty = slack, pagerduty

    def now(self) -> tuple[list[str], list[tuple[str, str]]]:
        """Slack's alert ids, PagerDuty's (action, dedup key), in order."""
        events = [(e["event_action"], e["dedup_key"]) for e in self.pagerduty.events]
        return self.slack.alert_ids(), events


def _past(since: float, minutes: float) -> Callable[[], bool]:
    return lambda: time.time() - since >= minutes * 60


def _hold_and_tick(
    platform: Platform, ticker: Ticker, services: Services, lock: Any, seen: dict[str, Any]
) -> None:
    """While the run is held by the lock: tick before WARN, past WARN, past ERROR (twice each);
    then release the lock. What each tick left is kept in ``seen``; a failure too."""
    try:
        wait_for(lambda: _started_at(platform.instance) is not None, "the run to start")
        found = _started_at(platform.instance)
        assert found is not None
        run_id, started = found
        seen["run_id"] = run_id
        wait_for(lambda: bool(_blocked_queries(platform)), "the sync to wait on the lock")
        held_since = time.time()
        seen["blocked"] = _blocked_queries(platform)
        early = ticker.tick()
        seen["early"] = (early.running, services.now(), time.time() - started)
        for stage, minutes in (("warn", WARN_MINUTES), ("error", ERROR_MINUTES)):
            wait_for(_past(started, minutes), f"the {stage} threshold")
            ticker.tick()
            ticker.tick()
            seen[stage] = services.now()
        run = platform.instance.get_run_by_id(run_id)
        seen["tags"] = dict(run.tags) if run else {}
        # The sync itself (not only its run) past ERROR, for the stage in its metadata.
        wait_for(_past(held_since, ERROR_MINUTES), "the sync past ERROR")
    except BaseException as exc:
        seen["failure"] = exc
    finally:
        with lock.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")
        lock.close()


def test_a_sync_held_past_both_thresholds_warns_once_pages_once_and_resolves_once(
    platform: Platform, slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    ticker = Ticker(
        platform,
        AlertingResource(
            slack_token=slack_server.token,
            slack_api_url=slack_server.base_url,
            pagerduty_routing_key=pagerduty_server.routing_key,
            pagerduty_url=pagerduty_server.base_url,
            ui_url="http://dagster.example",
            sync_warn_minutes=WARN_MINUTES,
            sync_error_minutes=ERROR_MINUTES,
        ),
    )
    services = Services(slack_server, pagerduty_server)
    assert services.now() == ([], [])
    lock = platform.stack.endpoint("primary", admin=True).connect()
    with lock.cursor() as cursor:
        cursor.execute(f"LOCK TABLES `{TABLE}` WRITE")
    seen: dict[str, Any] = {}
    driver = threading.Thread(target=_hold_and_tick, args=(platform, ticker, services, lock, seen))
    driver.start()
    result = platform.materialize(DAY, [bronze_key(FISCAL_LINES)])
    driver.join()
    if "failure" in seen:
        raise seen["failure"]
    assert result.success
    run_id = seen["run_id"]
    assert result.run_id == run_id

    # Held by the table lock on the read itself, not on the preflight's information_schema.
    assert seen["blocked"] and all(TABLE in q for q in seen["blocked"]), seen["blocked"]
    assert not any("information_schema" in q.lower() for q in seen["blocked"])

    running, told, elapsed = seen["early"]
    assert elapsed < WARN_MINUTES * 60, "the early tick came too late to test anything"
    assert told == ([], [])
    (sync,) = running
    assert (sync.run_id, sync.partition, sync.tables) == (run_id, str(DAY), (TABLE,))
    assert 0 <= sync.minutes < WARN_MINUTES

    warn_id, error_id = f"sync_sla:{run_id}:warn", f"sync_sla:{run_id}:error"
    key = dedup_key(run_id)
    assert seen["warn"] == ([warn_id], [])
    assert seen["error"] == ([warn_id, error_id], [("trigger", key)])
    trigger = pagerduty_server.events[0]
    assert trigger["payload"]["severity"] == "error"
    assert f"http://dagster.example/runs/{run_id}" in str(trigger["links"])
    assert seen["tags"][SLA_TAG] == "error"
    assert float(seen["tags"][SLA_MINUTES_TAG]) >= ERROR_MINUTES

    meta = metadata_of(result)
    assert meta["sla"] == "error"
    assert meta["sync_minutes"] >= ERROR_MINUTES
    assert meta["sync_minutes"] == pytest.approx(meta["seconds"] / 60, abs=1e-3)

    # The run has ended: one resolve, in PagerDuty under the trigger's key and in Slack.
    assert ticker.tick().running == ()
    ended_id = f"sync_sla-ended:{run_id}"
    assert services.now() == ([warn_id, error_id, ended_id], [("trigger", key), ("resolve", key)])
    said = slack_server.messages[-1]["text"]
    assert "resolved: bronze run" in said and "and succeeded" in said, said
    ticker.tick()
    ticker.tick()
    assert services.now() == ([warn_id, error_id, ended_id], [("trigger", key), ("resolve", key)])


def test_a_tick_killed_after_paging_still_resolves_a_run_that_ended_before_the_next(
    slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    """The page went out and the tick died before its cursor was saved; the run failed before
    the next tick. The next tick starts from the cursor before: the run's tags say it was paged,
    so it is resolved once, and its failure is told once (the tags moved its update time)."""
    release = threading.Event()

    @dg.asset(key=["bronze_acode", "held_table"])
    def held() -> None:
        if not release.wait(timeout=60):
            raise AssertionError("never released")
        raise RuntimeError("the source went away")

    alerting = AlertingResource(
        slack_token=slack_server.token,
        slack_api_url=slack_server.base_url,
        pagerduty_routing_key=pagerduty_server.routing_key,
        pagerduty_url=pagerduty_server.base_url,
        ui_url="http://dagster.example",
        sync_warn_minutes=0.005,
        sync_error_minutes=0.01,
    )
    services = Services(slack_server, pagerduty_server)
    with dg.instance_for_test() as instance:
        before = alert_tick(instance, None, alerting, lambda _: None).cursor
        outcome: list[dg.ExecuteInProcessResult] = []
        runner = threading.Thread(
            target=lambda: outcome.append(
                dg.materialize([held], instance=instance, raise_on_error=False)
            )
        )
        runner.start()
        try:
            wait_for(lambda: _started_at(instance) is not None, "the run to start")
            found = _started_at(instance)
            assert found is not None
            run_id, started = found
            wait_for(_past(started, 0.01), "the ERROR threshold")
            killed = alert_tick(instance, before, alerting, lambda _: None)
            (sync,) = killed.running
            assert sync.tables == ("held_table",)
        finally:
            release.set()
            runner.join()
        assert not outcome[0].success
        key = dedup_key(run_id)
        error_id = f"sync_sla:{run_id}:error"
        # Straight past ERROR between two ticks: the ERROR alone, no WARN.
        assert services.now() == ([error_id], [("trigger", key)])

        cursor = before  # the killed tick's cursor was never saved
        for _ in range(3):
            cursor = alert_tick(instance, cursor, alerting, lambda _: None).cursor
        ids, events = services.now()
        assert ids == [error_id, f"run:{run_id}", f"sync_sla-ended:{run_id}"], ids
        assert events == [("trigger", key), ("resolve", key)]
        assert "and failed" in slack_server.messages[-1]["text"]
