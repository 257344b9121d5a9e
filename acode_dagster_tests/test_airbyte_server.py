"""The loopback Airbyte server, driven by the real dagster-airbyte client (no mocks) against the
real MariaDB pair: what it answers, what its syncs land, and each of its fault knobs."""

from __future__ import annotations

import json
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from dagster import Failure
from dagster_airbyte import AirbyteWorkspace
from dagster_airbyte.resources import AirbyteClient
from dagster_airbyte.translator import AirbyteConnection, AirbyteDestination

from acode_dagster.demo.generator import Anomalies
from acode_dagster.demo.loader import load_days
from acode_dagster.landing import Landing, from_landed, landed_schema
from acode_dagster.mysql import MySQLEndpoint
from acode_dagster.tables import FISCAL_LINES, NFE_COMPLEMENTS, PRODUCTS, TABLES, Table, day_window
from acode_dagster_tests.support.airbyte import (
    BACKUP_CONNECTION_NAME,
    BACKUP_TO_BACKUP_BUCKET_NAME,
    PRIMARY_CONNECTION_NAME,
    PRIMARY_TO_BACKUP_BUCKET_NAME,
    S3_PATH_FORMAT,
    ConnectionSpec,
    LoopbackAirbyte,
)
from acode_dagster_tests.support.source import source_window

D1, D2 = date(2026, 6, 1), date(2026, 6, 2)
ROWS = {FISCAL_LINES.name: 300, NFE_COMPLEMENTS.name: 120, PRODUCTS.name: 150}


@pytest.fixture(scope="module")
def pair(mariadb_pair: Any) -> Any:
    """The session's pair with two past demo days (edge values included), replicated."""
    load_days(
        mariadb_pair.endpoint("primary", admin=True),
        [D1, D2],
        rows=ROWS,
        anomalies=Anomalies(edge_rows=True),
    )
    mariadb_pair.wait_replica_caught_up()
    return mariadb_pair


@pytest.fixture
def server(pair: Any, airbyte_server: LoopbackAirbyte) -> LoopbackAirbyte:
    return airbyte_server


def workspace(server: LoopbackAirbyte, **overrides: Any) -> AirbyteWorkspace:
    settings: dict[str, Any] = {
        "rest_api_base_url": server.rest_url,
        "configuration_api_base_url": server.config_url,
        "workspace_id": server.workspace_id,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "poll_interval": 0.1,
        "request_retry_delay": 0.05,
    }
    return AirbyteWorkspace(**{**settings, **overrides})


def client(server: LoopbackAirbyte, **overrides: Any) -> AirbyteClient:
    return workspace(server, **overrides).get_client()


def token_headers(server: LoopbackAirbyte) -> dict[str, str]:
    answer = requests.post(
        f"{server.rest_url}/applications/token",
        json={"client_id": server.client_id, "client_secret": server.client_secret},
        timeout=5,
    )
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def landed(server: LoopbackAirbyte, job_id: int, table: Table) -> pa.Table:
    """The rows job ``job_id`` landed for ``table``, cast back to the bronze contract."""
    folder = f"/{table.name}/"
    files = [f for f in server.job(job_id).files if folder in f]
    assert len(files) <= 1, "one file per stream and sync"
    batches = [from_landed(b, table) for f in files for b in pq.read_table(f).to_batches()]
    return pa.Table.from_batches(batches, schema=table.arrow_schema)


def rows_of(data: pa.Table, table: Table, day: date | None = None) -> list[dict[str, Any]]:
    rows = data.to_pylist()
    if day is not None and table.partition_column is not None:
        start, end = day_window(day)
        rows = [r for r in rows if start <= r[table.partition_column] < end]
    return sorted(rows, key=lambda r: r[table.key])


def source_cursors(endpoint: MySQLEndpoint, table: Table) -> dict[Any, datetime]:
    """Every source row's key and cursor value."""
    assert table.partition_column is not None
    with endpoint.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT `{table.key}`, `{table.partition_column}` FROM `{table.name}`")
        return {key: value for key, value in cursor.fetchall()}


def staging(tmp_path: Path) -> Path:
    """Where the fixture's connections land: the default staging prefix of the test's bronze."""
    return tmp_path / "bronze" / "_airbyte_staging"


def source_count(endpoint: MySQLEndpoint, table: Table) -> int:
    with endpoint.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM `{table.name}`")
        return int(cursor.fetchone()[0])


# ---------------------------------------------------------------------- the API


def test_tokens_and_the_workspace_are_checked(server: LoopbackAirbyte) -> None:
    wrong = requests.post(
        f"{server.rest_url}/applications/token",
        json={"client_id": server.client_id, "client_secret": "not-it"},
        timeout=5,
    )
    assert wrong.status_code == 401
    anonymous = requests.get(f"{server.rest_url}/workspaces/{server.workspace_id}", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["title"] == "invalid-api-key"
    token = requests.post(
        f"{server.rest_url}/applications/token",
        json={"client_id": server.client_id, "client_secret": server.client_secret},
        timeout=5,
    ).json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 180
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    mine = requests.get(f"{server.rest_url}/workspaces/{server.workspace_id}", headers=headers)
    assert mine.status_code == 200 and mine.json()["workspaceId"] == server.workspace_id
    other = requests.get(f"{server.rest_url}/workspaces/{uuid.uuid4()}", headers=headers)
    assert other.status_code == 404 and other.json()["title"] == "resource-not-found"

    client(server).validate_workspace_id()
    with pytest.raises(Failure, match="Max retries"):
        client(
            server, workspace_id=str(uuid.uuid4()), request_max_retries=0
        ).validate_workspace_id()


def test_connections_are_listed_and_parsed_by_dagster_airbyte(server: LoopbackAirbyte) -> None:
    # The whole discovery path dagster-airbyte takes to build asset specs.
    data = workspace(server).fetch_airbyte_workspace_data()
    assert set(data.connections_by_id) == {server.primary_id, server.backup_id}
    primary = data.connections_by_id[server.primary_id]
    assert primary.name == PRIMARY_CONNECTION_NAME
    assert data.connections_by_id[server.backup_id].name == BACKUP_CONNECTION_NAME
    assert set(primary.streams) == {t.name for t in TABLES}
    for table in TABLES:
        stream = primary.streams[table.name]
        assert stream.selected
        assert set(stream.json_schema["properties"]) == set(table.column_names)
    destination = data.destinations_by_id[primary.destination_id]
    assert isinstance(destination, AirbyteDestination) and destination.type == "s3"

    api = client(server)
    details = api.get_connection_details(server.backup_id)
    assert AirbyteConnection.from_connection_details(details).id == server.backup_id
    configs = {s["stream"]["name"]: s["config"] for s in details["syncCatalog"]["streams"]}
    assert configs[FISCAL_LINES.name]["syncMode"] == "incremental"
    assert configs[FISCAL_LINES.name]["destinationSyncMode"] == "append"
    assert configs[FISCAL_LINES.name]["cursorField"] == ["Data_Processamento"]
    assert configs[PRODUCTS.name]["destinationSyncMode"] == "overwrite"

    listed = {c["connectionId"]: c for c in api.get_connections()}
    streams = {s["name"]: s for s in listed[server.primary_id]["configurations"]["streams"]}
    assert streams[NFE_COMPLEMENTS.name]["syncMode"] == "incremental_append"
    assert streams[NFE_COMPLEMENTS.name]["primaryKey"] == [["id"]]
    assert streams[PRODUCTS.name]["syncMode"] == "full_refresh_overwrite"
    assert {c["status"] for c in listed.values()} == {"active"}
    config = api.get_destination_details(primary.destination_id)["configuration"]
    assert config["s3_path_format"] == S3_PATH_FORMAT
    assert config["format"]["format_type"] == "Parquet"

    # Pages of one: the client follows `next` until an empty page, as it does with Airbyte.
    server.clear_log()
    assert len(client(server, max_items_per_page=1).get_connections()) == 2
    pages = server.requests("GET", "/connections$")
    assert [r.query.get("offset") for r in pages] == [None, ["1"], ["2"]]


# ---------------------------------------------------------------------- syncs


def test_a_sync_lands_the_source_rows_with_airbyte_s_schema(
    server: LoopbackAirbyte, pair: Any, tmp_path: Path
) -> None:
    primary = pair.endpoint("primary")
    output = client(server).sync_and_poll(server.primary_id)

    job = output.job_details
    assert job["status"] == "succeeded" and job["jobType"] == "sync"
    assert job["startTime"].endswith("Z") and job["duration"].startswith("PT")
    assert job["rowsSynced"] == sum(source_count(primary, t) for t in TABLES)
    assert job["bytesSynced"] > 0
    files = server.job(job["jobId"]).files
    assert len(files) == len(TABLES)
    for table in TABLES:
        [path] = [f for f in files if f"/{table.name}/" in f]
        assert Path(path).parent == Path(Landing(str(staging(tmp_path))).stream_path(table))
        assert pq.read_schema(path).remove_metadata() == landed_schema(table)
    for table, day in ((FISCAL_LINES, D1), (NFE_COMPLEMENTS, D2), (PRODUCTS, D1)):
        # Edge values (largest decimals, odd text) included: what left MySQL is what landed.
        assert rows_of(landed(server, job["jobId"], table), table, day) == source_window(
            primary, table, day
        )
    # The first sync has no cursor: the whole table.
    keys = landed(server, job["jobId"], FISCAL_LINES).column("id").to_pylist()
    assert sorted(keys) == sorted(source_cursors(primary, FISCAL_LINES))
    assert server.cursor(server.primary_id, FISCAL_LINES) == max(
        source_cursors(primary, FISCAL_LINES).values()
    )


def test_the_next_sync_lands_from_the_cursor_and_overwrites_the_catalogue(
    server: LoopbackAirbyte, pair: Any, tmp_path: Path
) -> None:
    primary = pair.endpoint("primary")
    api = client(server)
    first = api.sync_and_poll(server.primary_id).job_details["jobId"]
    cursor = server.cursor(server.primary_id, FISCAL_LINES)
    assert cursor is not None

    second = api.sync_and_poll(server.primary_id).job_details["jobId"]
    source = source_cursors(primary, FISCAL_LINES)
    again = landed(server, second, FISCAL_LINES).column("id").to_pylist()
    # Inclusive: the rows at the saved cursor come again, nothing older does.
    assert again and sorted(again) == sorted(k for k, v in source.items() if v >= cursor)
    landing = Landing(str(staging(tmp_path)))
    [catalogue] = landing.files(PRODUCTS)
    assert catalogue in server.job(second).files and catalogue not in server.job(first).files
    assert len(landing.files(FISCAL_LINES)) == 2, "append keeps the earlier sync's file"

    # From a cursor at the start of D2 (Airbyte's state API would set it the same way).
    start_d2, _ = day_window(D2)
    server.set_cursor(server.primary_id, FISCAL_LINES, start_d2)
    third = api.sync_and_poll(server.primary_id).job_details["jobId"]
    rows = landed(server, third, FISCAL_LINES)
    assert sorted(rows.column("id").to_pylist()) == sorted(
        k for k, v in source.items() if v >= start_d2
    )
    assert rows_of(rows, FISCAL_LINES, D2) == source_window(primary, FISCAL_LINES, D2)
    assert rows_of(rows, FISCAL_LINES, D1) == []

    # Each connection keeps its own cursor: the backup's first sync reads everything.
    assert server.cursor(server.backup_id, FISCAL_LINES) is None
    backup_job = api.sync_and_poll(server.backup_id).job_details
    assert landed(server, backup_job["jobId"], FISCAL_LINES).num_rows == len(source)
    assert server.cursor(server.primary_id, FISCAL_LINES) == max(source.values())


def test_a_failing_job_lands_some_rows_fails_and_says_why(
    server: LoopbackAirbyte, pair: Any
) -> None:
    reason = "Lost connection to MySQL server during query (injected)"
    server.fail_next_jobs(1, reason, connection_id=server.primary_id)
    api = client(server)
    with pytest.raises(Failure, match="Job failed"):
        api.sync_and_poll(server.primary_id)

    [job_id] = server.jobs_started(server.primary_id)
    view = server.job(job_id)
    assert view.status == "failed" and view.failure_message == reason
    assert 0 < view.rows < sum(source_count(pair.endpoint("primary"), t) for t in TABLES)
    assert [Path(f).exists() for f in view.files] == [True], "the rows it read are landed"
    details = api.get_job_details(job_id)
    assert details["status"] == "failed" and "lastUpdatedAt" in details
    info = requests.post(
        f"{server.config_url}/jobs/get", json={"id": job_id}, headers=token_headers(server)
    ).json()
    assert info["job"]["status"] == "failed" and info["job"]["configId"] == server.primary_id
    attempt = info["attempts"][-1]["attempt"]
    assert attempt["status"] == "failed"
    failure = attempt["failureSummary"]["failures"][0]
    assert failure["externalMessage"] == reason and failure["failureOrigin"] == "source"
    assert isinstance(failure["timestamp"], int)
    # Nothing is committed by a failed job; the knob is spent and the next job succeeds.
    assert server.cursor(server.primary_id, FISCAL_LINES) is None
    assert api.sync_and_poll(server.primary_id).job_details["status"] == "succeeded"


def test_a_failure_can_be_the_destination_s(server: LoopbackAirbyte) -> None:
    reason = "Could not connect to the S3 bucket with the provided configuration (injected)"
    server.fail_next_jobs(1, reason, connection_id=server.backup_id, origin="destination")
    with pytest.raises(Failure, match="Job failed"):
        client(server).sync_and_poll(server.backup_id)
    [job_id] = server.jobs_started(server.backup_id)
    info = requests.post(
        f"{server.config_url}/jobs/get", json={"id": job_id}, headers=token_headers(server)
    ).json()
    failure = info["attempts"][-1]["attempt"]["failureSummary"]["failures"][0]
    assert failure["externalMessage"] == reason and failure["failureOrigin"] == "destination"


def test_the_backup_bucket_connections_land_into_their_own_staging(
    pair: Any, tmp_path: Path
) -> None:
    staging, backup_staging = tmp_path / "bronze" / "_airbyte_staging", tmp_path / "backup-staging"
    primary, backup = pair.endpoint("primary"), pair.endpoint("backup")
    with LoopbackAirbyte.for_pair(primary, backup, staging, backup_staging) as server:
        api = client(server)
        names = {c["name"]: c for c in api.get_connections()}
        assert set(names) == {
            PRIMARY_CONNECTION_NAME,
            BACKUP_CONNECTION_NAME,
            PRIMARY_TO_BACKUP_BUCKET_NAME,
            BACKUP_TO_BACKUP_BUCKET_NAME,
        }
        for name, where in (
            (PRIMARY_CONNECTION_NAME, staging),
            (BACKUP_TO_BACKUP_BUCKET_NAME, backup_staging),
        ):
            config = api.get_destination_details(names[name]["destinationId"])["configuration"]
            assert config["s3_bucket_path"] == str(where)
        values = server.environ()
        assert values["ACODE_AIRBYTE_STAGING_URL"] == str(staging)
        assert values["ACODE_AIRBYTE_BACKUP_STAGING_URL"] == str(backup_staging)
        assert (
            values["ACODE_AIRBYTE_PRIMARY_TO_BACKUP_BUCKET_CONNECTION_ID"]
            == server.primary_to_backup_bucket_id
        )
        assert (
            values["ACODE_AIRBYTE_BACKUP_TO_BACKUP_BUCKET_CONNECTION_ID"]
            == server.backup_to_backup_bucket_id
        )
        api.sync_and_poll(server.backup_to_backup_bucket_id)
    landing = Landing(str(backup_staging))
    assert landing.files(FISCAL_LINES) and not Landing(str(staging)).files(FISCAL_LINES)
    day = pa.Table.from_batches(
        list(landing.day_batches(FISCAL_LINES, D1, 1000)), schema=FISCAL_LINES.arrow_schema
    )
    assert rows_of(day, FISCAL_LINES) == source_window(backup, FISCAL_LINES, D1)


def test_a_hung_job_is_cancelled_by_the_client_s_timeout(server: LoopbackAirbyte) -> None:
    server.hang_jobs()
    with pytest.raises(Failure, match="Timeout"):
        client(server, poll_timeout=0.5).sync_and_poll(server.primary_id)
    [job_id] = server.jobs_started(server.primary_id)
    assert server.cancellations(server.primary_id) == [job_id]
    view = server.wait_for_job(job_id, timeout_s=10)
    assert view.status == "cancelled" and view.rows == 0 and view.files == ()
    info = requests.post(
        f"{server.config_url}/jobs/get", json={"id": job_id}, headers=token_headers(server)
    ).json()
    [failure] = info["attempts"][-1]["attempt"]["failureSummary"]["failures"]
    assert failure["failureType"] == "manual_cancellation"

    # While one runs, a second start is refused with Airbyte's 409, and the client fails.
    api = client(server)
    running = api.start_sync_job(server.primary_id)["jobId"]
    refused = requests.post(
        f"{server.rest_url}/jobs",
        json={"connectionId": server.primary_id, "jobType": "sync"},
        headers=token_headers(server),
    )
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["title"] == "try-again-later" and problem["detail"]
    assert server.primary_id in problem["data"]["message"]
    with pytest.raises(Failure):
        client(server, request_max_retries=0).start_sync_job(server.primary_id)
    # The jobs list shows it (newest first), then it is cancelled; cancelling again is a 409.
    jobs = api.get_jobs_for_connection(server.primary_id)
    assert [j.id for j in jobs] == [running, job_id]
    assert api.cancel_job(running)["status"] == "cancelled"
    again = requests.delete(f"{server.rest_url}/jobs/{running}", headers=token_headers(server))
    assert again.status_code == 409
    assert again.json()["data"]["message"] == "Job is not currently running"
    server.hang_jobs(False)


def test_a_cancel_stops_a_running_sync_at_its_next_batch(
    server: LoopbackAirbyte, pair: Any
) -> None:
    server.batch_rows = 50
    server.set_batch_delay(0.2)
    api = client(server)
    job_id = api.start_sync_job(server.primary_id)["jobId"]
    deadline = time.monotonic() + 10
    while server.job(job_id).rows == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    api.cancel_job(job_id)
    view = server.wait_for_job(job_id, timeout_s=10)
    assert view.status == "cancelled"
    assert 0 < view.rows < source_count(pair.endpoint("primary"), FISCAL_LINES)
    time.sleep(0.3)
    assert server.job(job_id).rows == view.rows, "the sync thread stopped"
    assert server.cursor(server.primary_id, FISCAL_LINES) is None


def test_a_connection_lands_into_s3_where_the_landing_reads_it(pair: Any, s3_bucket: str) -> None:
    """Outside pytest's fixture (as the bench uses it): a bucket behind moto's HTTP server."""
    url = f"s3://{s3_bucket}/_airbyte_staging"
    primary = pair.endpoint("primary")
    spec = ConnectionSpec(PRIMARY_CONNECTION_NAME, primary, url, tables=(FISCAL_LINES, PRODUCTS))
    with LoopbackAirbyte([spec]) as server:
        api = client(server)
        api.sync_and_poll(server.primary_id)
        api.sync_and_poll(server.primary_id)
        destination_id = api.get_connection_details(server.primary_id)["destinationId"]
        config = api.get_destination_details(destination_id)["configuration"]
    assert (config["s3_bucket_name"], config["s3_bucket_path"]) == (s3_bucket, "_airbyte_staging")
    landing = Landing(url)
    assert len(landing.files(FISCAL_LINES)) == 2 and len(landing.files(PRODUCTS)) == 1
    # The platform's cutter reads what the connection landed: partition D1, one row per key.
    batches = list(landing.day_batches(FISCAL_LINES, D1, 1000))
    day = pa.Table.from_batches(batches, schema=FISCAL_LINES.arrow_schema)
    assert rows_of(day, FISCAL_LINES) == source_window(primary, FISCAL_LINES, D1)


# ---------------------------------------------------------------------- faults of the API


def test_server_errors_are_retried_by_the_client_and_then_fail(server: LoopbackAirbyte) -> None:
    api = client(server)
    server.fail_requests(1)
    assert api.sync_and_poll(server.primary_id).job_details["status"] == "succeeded"
    assert len(server.requests(status=503)) == 1

    server.fail_all_requests()
    with pytest.raises(Failure, match="Max retries"):
        client(server, request_max_retries=2).sync_and_poll(server.primary_id)
    assert len(server.jobs_started()) == 1, "no job was started while the API failed"
    server.clear_request_failures()
    api.validate_workspace_id()


def test_rejected_credentials_fail_the_client(server: LoopbackAirbyte) -> None:
    holder = client(server, request_max_retries=0)
    holder.validate_workspace_id()  # holds a token from now on
    server.reject_credentials()
    with pytest.raises(Failure):
        holder.validate_workspace_id()
    with pytest.raises(Failure):
        client(server, request_max_retries=0).validate_workspace_id()
    assert server.requests("POST", "/applications/token$", status=401)
    assert server.requests("GET", "/workspaces/", status=401)
    server.reject_credentials(False)
    holder.validate_workspace_id()


def test_a_removed_or_inactive_connection_is_refused(server: LoopbackAirbyte) -> None:
    api = client(server, request_max_retries=0)
    headers = token_headers(server)
    server.remove_connection(server.backup_id)
    gone = requests.get(f"{server.rest_url}/connections/{server.backup_id}", headers=headers)
    assert gone.status_code == 404
    assert gone.json()["data"]["resourceId"] == server.backup_id
    assert [c["connectionId"] for c in api.get_connections()] == [server.primary_id]
    with pytest.raises(Failure):
        api.sync_and_poll(server.backup_id)
    started = requests.post(
        f"{server.rest_url}/jobs",
        json={"connectionId": server.backup_id, "jobType": "sync"},
        headers=headers,
    )
    assert started.status_code == 404
    server.restore_connection(server.backup_id)
    assert len(api.get_connections()) == 2

    server.set_connection_status(server.primary_id, "inactive")
    refused = requests.post(
        f"{server.rest_url}/jobs",
        json={"connectionId": server.primary_id, "jobType": "sync"},
        headers=headers,
    )
    assert refused.status_code == 409 and refused.json()["detail"]
    assert api.get_connection_details(server.primary_id)["status"] == "inactive"
    with pytest.raises(Failure):
        api.start_sync_job(server.primary_id)
    assert server.jobs_started() == []


def test_the_request_log_says_which_connection_ran_and_holds_no_secret(
    server: LoopbackAirbyte,
) -> None:
    api = client(server)
    api.sync_and_poll(server.primary_id)
    api.sync_and_poll(server.backup_id)
    [primary_job] = server.jobs_started(server.primary_id)
    [backup_job] = server.jobs_started(server.backup_id)
    started = server.requests("POST", "/jobs$")
    assert [r.connection_id for r in started] == [server.primary_id, server.backup_id]
    for job_id, connection_id in ((primary_job, server.primary_id), (backup_job, server.backup_id)):
        polls = server.requests("GET", rf"/jobs/{job_id}$")
        assert polls and {r.connection_id for r in polls} == {connection_id}
    [token] = server.requests("POST", "/applications/token$")
    assert token.body["client_secret"] == "***"
    everything = json.dumps([r.__dict__ for r in server.request_log], default=str)
    assert server.client_secret not in everything
    assert server.client_secret not in repr(server)


def test_environ_points_the_platform_at_the_server(server: LoopbackAirbyte) -> None:
    values = server.environ()
    assert values["AIRBYTE_REST_API_BASE_URL"] == server.rest_url
    assert values["AIRBYTE_CONFIGURATION_API_BASE_URL"] == server.config_url
    assert values["AIRBYTE_WORKSPACE_ID"] == server.workspace_id
    assert values["AIRBYTE_CLIENT_ID"] == server.client_id
    assert values["AIRBYTE_CLIENT_SECRET"] == server.client_secret
    assert values["ACODE_AIRBYTE_PRIMARY_CONNECTION_ID"] == server.primary_id
    assert values["ACODE_AIRBYTE_BACKUP_CONNECTION_ID"] == server.backup_id
