"""Shared fixtures beyond the MariaDB pair: S3 over HTTP, bronze stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from acode_dagster.bronze.store import BronzeStore, LocalStore, S3Store, s3_client
from acode_dagster_tests.support.s3 import MotoServer, moto_server


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
