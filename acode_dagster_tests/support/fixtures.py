"""Shared fixtures beyond the MariaDB pair: S3 over HTTP, bronze stores, a Dagster home on
Postgres as production runs it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from acode_dagster.bronze.store import BronzeStore, LocalStore, S3Store, s3_client
from acode_dagster_tests.support.s3 import MotoServer, moto_server

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
"""The machine's PostgreSQL (trust on 127.0.0.1), where production-like instances live."""
DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> str:
    name = f"acode-bronze-{uuid.uuid4().hex[:10]}"
    s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BronzeStore:
    """Each store test runs on a folder and on a bucket behind moto's HTTP server."""
    if request.param == "local":
        return LocalStore(tmp_path / "bronze")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, "lake")


@pytest.fixture
def postgres_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Dagster home with the production ``dagster.yaml``, on a fresh Postgres database."""
    name = f"acode_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{POSTGRES_SERVER}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(DEPLOYED, home / "dagster.yaml")
    for variable, value in {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": name,
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
    }.items():
        monkeypatch.setenv(variable, value)
    try:
        yield home
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
