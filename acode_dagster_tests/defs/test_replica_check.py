"""The replica check and the re-verification after fail-back, through real Dagster: the check
run by its job and by ``materialize``, the sensor ticked as the daemon ticks it, the job it
launches run in process, the re-sync a real bronze run, on a private MariaDB pair."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from acode_dagster import failover
from acode_dagster.bronze.store import LocalStore
from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.defs.redundancy.assets import redundancy
from acode_dagster.defs.redundancy.replica import (
    CHECK_NAME,
    REVERIFY_FIELD,
    Reverified,
    ReverifyCursor,
    check_days,
    replica_check_job,
    replica_check_result,
    replica_consistency,
    replica_reverify_job,
    replica_reverify_sensor,
    returns_source_to_primary,
    reverify,
    reverify_days,
    reverify_tick,
)
from acode_dagster.defs.redundancy.state import (
    REDUNDANCY_KEY,
    event_observation,
    load_state,
    save_state,
)
from acode_dagster.defs.resources import AcodeSourcesResource, BronzeResource, MySQLServerResource
from acode_dagster.errors import ConfigError
from acode_dagster.failover import EVENT_KINDS, RouteEvent
from acode_dagster.localstack import LocalStack
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.routing import BACKUP, PRIMARY, ROLES, Role, Route
from acode_dagster.settings import Settings
from acode_dagster.source.checksum import (
    Reconciliation,
    SpanSum,
    WindowCheck,
    WindowSum,
    compare,
    complete_days_before,
)
from acode_dagster.tables import (
    FISCAL_LINES,
    NFE_COMPLEMENTS,
    PRODUCTS,
    SOURCE_TIMEZONE,
    day_window,
)
from acode_dagster_tests.support.alerting import LoopbackPagerDuty, LoopbackSlack
from acode_dagster_tests.support.platform import Platform, metadata_of, started_platform
from acode_dagster_tests.support.source import source_window

DAYS = complete_days_before(datetime.now(SOURCE_TIMEZONE).date(), 3)
ROWS = {FISCAL_LINES.name: 300, NFE_COMPLEMENTS.name: 60, PRODUCTS.name: 80}
CHECK_KEY = dg.AssetCheckKey(REDUNDANCY_KEY, CHECK_NAME)


@pytest.fixture
def platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mariadb_pair_factory: Callable[..., LocalStack],
    slack_server: LoopbackSlack,
    pagerduty_server: LoopbackPagerDuty,
) -> Iterator[Platform]:
    settings = {
        "ACODE_PROBE_TIMEOUT_S": "2",
        "ACODE_CATCHUP_DAYS": str(len(DAYS)),
        "ACODE_REPLICA_CHECK_DAYS": str(len(DAYS)),
        "ACODE_REPLICA_CHECK_WAIT_S": "0",
        "ACODE_RETRIES": "1",
        "ACODE_RETRY_BASE_S": "0.1",
    }
    with started_platform(
        tmp_path,
        monkeypatch,
        mariadb_pair_factory,
        slack_server,
        pagerduty_server,
        settings=settings,
        days=DAYS,
        rows=ROWS,
    ) as started:
        yield started


def _execute(platform: Platform, job: Any, **kwargs: Any) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(
        assets=[redundancy],
        asset_checks=[replica_consistency],
        jobs=[job],
        resources=platform.resources,
    )
    result: dg.ExecuteInProcessResult = defs.resolve_job_def(job.name).execute_in_process(
        instance=platform.instance, raise_on_error=False, **kwargs
    )
    return result


def _execute_sql(endpoint: MySQLEndpoint, *statements: tuple[str, tuple[Any, ...]]) -> None:
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            for sql, args in statements:
                cursor.execute(sql, args)
    finally:
        connection.close()


def _first_id(endpoint: MySQLEndpoint, day: date) -> int:
    start, end = day_window(day)
    connection = endpoint.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT MIN(id) FROM `{FISCAL_LINES.name}` WHERE `Data_Processamento` >= %s "
                "AND `Data_Processamento` < %s",
                (start, end),
            )
            row = cursor.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        connection.close()


# ---------------------------------------------------------------------- the replica check


def test_a_row_changed_only_on_the_replica_fails_the_check_by_name_and_alerts(
    platform: Platform, slack_server: LoopbackSlack, pagerduty_server: LoopbackPagerDuty
) -> None:
    # Equal data passes, run the way the UI runs a check (materialize selecting the check).
    passed = dg.materialize(
        [redundancy, replica_consistency],
        selection=dg.AssetSelection.checks(replica_consistency),
        resources=platform.resources,
        instance=platform.instance,
    )
    (evaluation,) = passed.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["compared_windows"].value == 2 * len(DAYS) + 1
    assert evaluation.metadata["differing_windows"].value == 0
    assert evaluation.metadata[f"{FISCAL_LINES.name}/primary_rows"].value == 300 * len(DAYS)
    assert evaluation.metadata[f"{FISCAL_LINES.name}/replica_rows"].value == 300 * len(DAYS)

    day = DAYS[1]
    backup = platform.stack.endpoint("backup", admin=True)
    row_id = _first_id(backup, day)
    update = f"UPDATE `{FISCAL_LINES.name}` SET `Val_Prod` = `Val_Prod` + %s WHERE id = %s"
    _execute_sql(backup, (update, (1, row_id)))
    try:
        failed = _execute(platform, replica_check_job)
        assert failed.success  # a failed non-blocking check fails no step
        (evaluation,) = failed.get_asset_check_evaluations()
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        measured = str(evaluation.metadata["measured"].value)
        assert f"{FISCAL_LINES.name} {day}" in measured and "1 window(s) differ" in measured
        assert evaluation.metadata["differing_windows"].value == 1
        assert evaluation.metadata[f"{FISCAL_LINES.name}/differing_windows"].value == 1
        assert f"| {FISCAL_LINES.name} | {day} | differs |" in str(
            evaluation.metadata["differing"].value
        )
        record = platform.instance.get_latest_asset_check_evaluation_record(CHECK_KEY)
        assert record is not None and record.run_id == failed.run_id

        platform.tick_alerts()
        texts = [m["text"] for m in slack_server.messages]
        assert len(texts) == 1 and f"{CHECK_NAME} ERROR on redundancy" in texts[0]
        assert f"{FISCAL_LINES.name} {day}" in texts[0]
        assert [e["event_action"] for e in pagerduty_server.events] == ["trigger"]
    finally:
        _execute_sql(backup, (update, (-1, row_id)))

    healed = _execute(platform, replica_check_job)
    assert healed.get_asset_check_evaluations()[0].passed
    platform.tick_alerts()
    assert [e["event_action"] for e in pagerduty_server.events] == ["trigger", "resolve"]


# ---------------------------------------------------------------------- re-verify after fail-back


def _pin(platform: Platform, role: Role) -> None:
    """An operator's pin of the source, as `acode route pin` records it."""
    state, events = failover.pin(
        load_state(platform.instance),
        failover.Pin(role=role, reason="test", by="test", at=datetime.now(UTC), parts=("source",)),
    )
    save_state(platform.instance, state)
    for event in events:
        platform.instance.report_runless_asset_event(event_observation(event))


def _tick(platform: Platform, cursor: str | None) -> tuple[str | None, list[dg.RunRequest]]:
    with dg.build_sensor_context(
        instance=platform.instance, cursor=cursor, resources=platform.resources
    ) as context:
        result = replica_reverify_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result.cursor, list(result.run_requests or [])


def _write_unlogged(primary: MySQLEndpoint, day: date, rows: int) -> None:
    """Rows the replica never hears of: copies of ``day``'s first rows under new ids, written
    on the primary with binary logging off for the session."""
    names = FISCAL_LINES.column_names
    columns = ", ".join(f"`{c}`" for c in names)
    copied = ", ".join("id + 10000000000000000" if c == "id" else f"`{c}`" for c in names)
    start, end = day_window(day)
    _execute_sql(
        primary,
        ("SET SESSION sql_log_bin = 0", ()),
        (
            f"INSERT INTO `{FISCAL_LINES.name}` ({columns}) SELECT {copied} FROM "
            f"`{FISCAL_LINES.name}` WHERE `Data_Processamento` >= %s AND `Data_Processamento` < %s "
            "ORDER BY id LIMIT %s",
            (start, end, rows),
        ),
    )


def _latest_reverification(
    instance: dg.DagsterInstance,
) -> tuple[dict[str, Any], dg.AssetObservation]:
    records = instance.fetch_observations(REDUNDANCY_KEY, limit=1).records
    observation = records[0].asset_observation
    assert observation is not None
    value = observation.metadata[REVERIFY_FIELD].value
    result = value if isinstance(value, dict) else json.loads(str(value))
    return result, observation


def test_a_day_read_from_a_replica_that_missed_transactions_is_resynced_from_the_primary(
    platform: Platform, tmp_path: Path
) -> None:
    missed, fine = DAYS[1], DAYS[2]
    _write_unlogged(platform.stack.endpoint("primary", admin=True), missed, rows=3)
    cursor, requests = _tick(platform, None)
    assert requests == []

    _pin(platform, BACKUP)
    assert platform.route == Route(BACKUP, PRIMARY)
    for day in (missed, fine):
        synced = platform.materialize(day, [bronze_key(FISCAL_LINES)])
        assert synced.success and metadata_of(synced)["source_role"] == BACKUP
    bronze = LocalStore(tmp_path / "bronze")
    assert bronze.manifest(FISCAL_LINES, missed).rows == 300  # type: ignore[union-attr]
    cursor, requests = _tick(platform, cursor)
    assert requests == []  # on the backup: nothing to re-verify yet

    _pin(platform, PRIMARY)  # the source comes back
    cursor, requests = _tick(platform, cursor)
    (reverify,) = requests
    assert reverify.job_name == replica_reverify_job.name
    assert reverify.run_key is not None and reverify.run_key.startswith("replica-reverify/")
    pairs = reverify.run_config["ops"]["reverify_replica_days"]["config"]["pairs"]
    assert pairs == [{"table": FISCAL_LINES.name, "day": str(d)} for d in (missed, fine)]

    # The heavy part runs as a job, not in the tick.
    run = _execute(
        platform, replica_reverify_job, run_config=reverify.run_config, tags=reverify.tags
    )
    assert run.success
    result, observation = _latest_reverification(platform.instance)
    assert result["resync"] == [[FISCAL_LINES.name, str(missed)]]
    verdicts = {v["day"]: Reconciliation.from_json(v) for v in result["verdicts"]}
    assert verdicts[str(missed)].published_rows == 300
    on_primary = verdicts[str(missed)].primary
    assert on_primary is not None and on_primary.rows == 303
    assert "published 300 rows read from the replica" in verdicts[str(missed)].reason
    assert not verdicts[str(fine)].resync
    assert observation.metadata["resync_days"].value == 1

    cursor, requests = _tick(platform, cursor)
    (resync,) = requests
    assert resync.partition_key == str(missed)
    assert list(resync.asset_selection or []) == [bronze_key(FISCAL_LINES)]
    assert resync.run_key == f"{reverify.run_key.replace('reverify', 'resync')}/{missed}"
    assert _tick(platform, cursor)[1] == []  # once

    resynced = platform.run(resync)
    assert resynced.success and metadata_of(resynced)["source_role"] == PRIMARY
    expected = source_window(platform.stack.endpoint("primary"), FISCAL_LINES, missed)
    published = bronze.read_partition(FISCAL_LINES, missed).sort_by("id")
    assert published.num_rows == len(expected) == 303
    assert published.column("id").to_pylist() == [r["id"] for r in expected]
    assert published.to_pylist() == expected


def test_resyncs_wait_while_the_source_is_on_the_backup() -> None:
    with dg.instance_for_test() as instance:
        cursor, requests = reverify_tick(instance, None, 3, datetime.now(UTC))
        assert requests == []
        state, _ = failover.pin(
            load_state(instance),
            failover.Pin(BACKUP, "maintenance", "test", datetime.now(UTC), ("source",)),
        )
        save_state(instance, state)
        done = Reverified(41, [_reconciled(True)])
        instance.report_runless_asset_event(done.observation("source failed back"))
        cursor, requests = reverify_tick(instance, cursor, 3, datetime.now(UTC))
        assert requests == []
        assert ReverifyCursor.from_json(cursor).held == [
            {"event_id": 41, "day": "2026-11-20", "tables": [FISCAL_LINES.name]}
        ]
        state, events = failover.pin(
            state, failover.Pin(PRIMARY, "done", "test", datetime.now(UTC), ("source",))
        )
        save_state(instance, state)
        for event in events:  # a return to the primary with nothing read from the backup
            instance.report_runless_asset_event(event_observation(event))
        cursor, requests = reverify_tick(instance, cursor, 3, datetime.now(UTC))
        assert [(r.run_key, r.partition_key) for r in requests] == [
            ("replica-resync/41/2026-11-20", "2026-11-20")
        ]
        assert ReverifyCursor.from_json(cursor).held == []


def _window(rows: int, crc: int, table: str = FISCAL_LINES.name) -> WindowSum:
    return WindowSum(table, date(2026, 11, 20), "mysql://x", (SpanSum(None, rows, crc),))


def _reconciled(resync: bool) -> Reconciliation:
    return Reconciliation(
        FISCAL_LINES.name,
        date(2026, 11, 20),
        resync,
        "because",
        10,
        _window(11, 1),
        _window(10, 1),
    )


# ---------------------------------------------------------------------- decisions and wiring


def _event(
    kind: str, parts: tuple[str, ...], from_role: str | None, to_role: str | None
) -> RouteEvent:
    return RouteEvent(
        kind=kind,  # type: ignore[arg-type]
        part=parts[0] if len(parts) == 1 else None,  # type: ignore[arg-type]
        parts=parts,  # type: ignore[arg-type]
        from_role=from_role,  # type: ignore[arg-type]
        to_role=to_role,  # type: ignore[arg-type]
        at=datetime(2026, 11, 21, 12, tzinfo=UTC),
        reason="r",
        automatic=kind not in ("pinned", "unpinned"),
        critical=False,
    )


@pytest.mark.parametrize("kind", EVENT_KINDS)
@pytest.mark.parametrize("parts", [("source",), ("bucket",), ("source", "bucket")])
@pytest.mark.parametrize("from_role", [*ROLES, None])
@pytest.mark.parametrize("to_role", ROLES)
def test_only_a_move_of_the_source_onto_the_primary_counts_as_a_return(
    kind: str, parts: tuple[str, ...], from_role: str | None, to_role: str
) -> None:
    event = _event(kind, parts, from_role, to_role)
    expected = (
        kind in ("failback", "failover", "pinned")
        and "source" in parts
        and to_role == PRIMARY
        and from_role in (BACKUP, None)
    )
    assert returns_source_to_primary(event) is expected


def test_the_days_reverified_reach_back_to_the_outage_or_the_catch_up_window() -> None:
    event = _event("failback", ("source",), BACKUP, PRIMARY)  # 2026-11-21 09:00 in São Paulo
    first = date(2025, 1, 1)
    assert reverify_days(event, 2, first) == [
        date(2026, 11, 19),
        date(2026, 11, 20),
        date(2026, 11, 21),
    ]
    long_outage = RouteEvent(**{**event.__dict__, "outage_s": 5 * 86400.0})
    assert reverify_days(long_outage, 2, first)[0] == date(2026, 11, 16)
    assert reverify_days(long_outage, 2, date(2026, 11, 20))[0] == date(2026, 11, 20)


def test_the_check_result_fails_error_on_a_difference_and_warn_on_lag_or_no_answer() -> None:
    equal = compare(_window(5, 1), _window(5, 1))
    differs = compare(_window(5, 1), _window(6, 2))
    day = date(2026, 11, 20)
    ok = WindowCheck(FISCAL_LINES.name, day, "equal", equal, lag_s=0.0)
    bad = WindowCheck(FISCAL_LINES.name, day, "differs", differs, lag_s=0.0)
    lagging = WindowCheck(FISCAL_LINES.name, day, "lagging", differs, lag_s=9.0)
    error = WindowCheck(PRODUCTS.name, None, "error", None, "unreachable")
    for checks, passed, severity in [
        ([ok], True, dg.AssetCheckSeverity.WARN),
        ([ok, bad, lagging, error], False, dg.AssetCheckSeverity.ERROR),
        ([ok, lagging], False, dg.AssetCheckSeverity.WARN),
        ([error], False, dg.AssetCheckSeverity.WARN),
    ]:
        result = replica_check_result(checks, [day])
        assert result.passed is passed and (passed or result.severity == severity)
        metadata = result.metadata
        assert metadata["compared_windows"].value == len(checks)
        assert metadata["differing_windows"].value == sum(c.verdict == "differs" for c in checks)
        assert all(
            isinstance(metadata[k].value, int)
            for k in metadata
            if k.endswith(("_rows", "_windows"))
        )
    assert "replica is 9 s behind" in str(
        replica_check_result([lagging], [day]).metadata["measured"].value
    )


def test_the_check_runs_daily_at_half_past_five_in_sao_paulo_by_its_own_job() -> None:
    from acode_dagster.definitions import defs

    schedule = defs.resolve_schedule_def("replica_check_schedule")
    assert schedule.cron_schedule == "30 5 * * *"
    assert schedule.execution_timezone == "America/Sao_Paulo"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "replica_check_job"
    job = defs.resolve_job_def("replica_check_job")
    # The check alone, as a step of its own: nothing is materialized.
    assert [node.name for node in job.nodes] == ["redundancy_replica_consistency"]
    assert job.asset_layer.selected_asset_keys == set()
    sensor = defs.resolve_sensor_def("replica_reverify_sensor")
    assert {t.job_name for t in sensor.targets} == {"replica_reverify_job", "bronze_acode_job"}
    now = datetime(2026, 11, 21, 5, 30, tzinfo=SOURCE_TIMEZONE)
    assert check_days(3, now) == [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]
    start = daily_partitions.start.date()
    just_after = datetime.combine(start + timedelta(days=1), time(12), SOURCE_TIMEZONE)
    assert check_days(3, just_after) == [start]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACODE_REPLICA_CHECK_CRON", "every morning"),
        ("ACODE_REPLICA_CHECK_CRON", "30 5 * *"),
        ("ACODE_REPLICA_CHECK_DAYS", "0"),
        ("ACODE_REPLICA_CHECK_DAYS", "1.5"),
        ("ACODE_REPLICA_CHECK_WAIT_S", "-1"),
    ],
)
def test_bad_replica_check_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_cron_dagster_refuses_is_refused_by_name() -> None:
    from acode_dagster.defs.redundancy import replica

    settings = Settings.from_env({"ACODE_REPLICA_CHECK_CRON": "61 5 * * *"})
    with pytest.raises(ConfigError, match="ACODE_REPLICA_CHECK_CRON"):
        replica._cron(settings)
    assert Settings.from_env({}).replica_check_cron == "30 5 * * *"
    assert Settings.from_env({}).replica_check_days == 3


def test_the_sensor_cursor_round_trips() -> None:
    cursor = ReverifyCursor(7, [{"event_id": 3, "day": "2026-11-20", "tables": ["t"]}], 12.5)
    assert ReverifyCursor.from_json(cursor.to_json()) == cursor


def _server(role: str, endpoint: MySQLEndpoint, tmp_path: Path) -> MySQLServerResource:
    return MySQLServerResource(
        role=role,
        url=f"mysql://{endpoint.user}@{endpoint.address}/{endpoint.database}",
        password=endpoint.password,
        stack_home=str(tmp_path),
        connect_timeout_s=2,
        read_timeout_s=5,
    )


def test_a_day_is_decided_on_the_primary_alone_and_never_without_it(
    mariadb_pair: LocalStack, tmp_path: Path
) -> None:
    live = mariadb_pair.endpoint("primary")
    dead = MySQLEndpoint("127.0.0.1", 1, "acode", "acode_farmarcas", "secret-pw")
    bronze = BronzeResource(primary_url=str(tmp_path / "b1"), backup_url=str(tmp_path / "b2"))
    day = date(2020, 1, 2)  # no test writes there: an empty window
    with dg.instance_for_test() as instance:
        replica_down = AcodeSourcesResource(
            primary=_server("primary", live, tmp_path), backup=_server("backup", dead, tmp_path)
        )
        done = reverify(replica_down, bronze, instance, 5, [(FISCAL_LINES.name, day)])
        assert done.unverified == [] and done.resync == [(FISCAL_LINES.name, "2020-01-02")]
        assert "replica could not be read" in done.reconciled[0].reason

        primary_down = AcodeSourcesResource(
            primary=_server("primary", dead, tmp_path), backup=_server("backup", live, tmp_path)
        )
        done = reverify(primary_down, bronze, instance, 5, [(FISCAL_LINES.name, day)])
        assert done.reconciled == [] and done.resync == []
        ((table, when, why),) = done.unverified
        assert (table, when) == (FISCAL_LINES.name, "2020-01-02") and "secret-pw" not in why
        observed = done.observation("source failed back")
        assert observed.metadata["unverified_days"].value == 1
        assert "not verified" in str(observed.metadata["reverify_verdicts"].value)
