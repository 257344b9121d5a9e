"""The bronze store: fixed layout, all-or-nothing publish, replace without stale files."""

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from acode_dagster.bronze.publish import PartitionWriter, publish_batches
from acode_dagster.bronze.store import (
    SUCCESS_MARKER,
    BronzeStore,
    LocalStore,
    Manifest,
    S3Store,
    open_store,
    parse_bronze_url,
    partition_prefix,
)
from acode_dagster.errors import BronzeError, ConfigError
from acode_dagster.tables import NFE_COMPLEMENTS as TABLE

DAY = date(2026, 11, 20)


def batch(first_id: int, rows: int, note: str) -> pa.RecordBatch:
    data = {
        "id": list(range(first_id, first_id + rows)),
        "Chave_NFe": ["3" * 44] * rows,
        "Data": [DAY] * rows,
        "Data_Processamento": [datetime(2026, 11, 20, 12, 0, 0, 123456)] * rows,
        "CNPJ_Emitente": ["11222333000181"] * rows,
        "CNPJ_Destinatario": [None] * rows,
        "Protocolo_Autorizacao": ["135260000000001"] * rows,
        "Status_NFe": ["autorizada"] * rows,
        "Valor_Total_NF": [Decimal("-9999999999999.99")] * rows,
        "XML_Hash": ["a" * 64] * rows,
        "Informacoes_Complementares": [f"{note} ação 💊 {i}" for i in range(rows)],
    }
    return pa.RecordBatch.from_pydict(data, schema=TABLE.arrow_schema)


def publish(store: BronzeStore, batches: list[pa.RecordBatch], max_file_bytes: int) -> Manifest:
    return publish_batches(
        TABLE,
        DAY,
        store,
        batches,
        source="mysql://t@h:1/db",
        replicator="test",
        row_group_rows=1000,
        max_file_bytes=max_file_bytes,
    )


def test_layout_is_fixed() -> None:
    assert partition_prefix(TABLE, DAY) == (
        "origin=airbyte/database=bronze_acode/farmarcas_si_analitico_diario_complemento/"
        "cog_dt_ingestion=2026-11-20"
    )


def test_publish_splits_files_and_reads_back_exactly(store: BronzeStore) -> None:
    batches = [batch(i * 1000, 1000, "v1") for i in range(5)]
    manifest = publish(store, batches, max_file_bytes=1)
    assert [f.name for f in manifest.files] == [
        f"file_{TABLE.name}_{n:03d}.parquet" for n in range(1, 6)
    ]
    assert store.visible_files(TABLE, DAY) == sorted(
        [SUCCESS_MARKER, *(f.name for f in manifest.files)]
    )
    assert store.manifest(TABLE, DAY) == manifest
    back = store.read_partition(TABLE, DAY)
    assert back.schema == TABLE.arrow_schema
    assert back.to_pylist() == pa.Table.from_batches(batches).to_pylist()


def test_republish_replaces_and_leaves_no_stale_files(store: BronzeStore) -> None:
    publish(store, [batch(i * 1000, 1000, "v1") for i in range(5)], max_file_bytes=1)
    second = publish(store, [batch(0, 1500, "v2")], max_file_bytes=1 << 30)
    assert store.visible_files(TABLE, DAY) == sorted([SUCCESS_MARKER, second.files[0].name])
    back = store.read_partition(TABLE, DAY)
    assert back.num_rows == 1500
    assert all(v.startswith("v2") for v in back.column("Informacoes_Complementares").to_pylist())


def test_abandoned_staging_leaves_the_previous_version(store: BronzeStore) -> None:
    first = publish(store, [batch(0, 10, "v1")], max_file_bytes=1 << 30)
    with pytest.raises(RuntimeError), store.staging(TABLE, DAY) as staging:
        writer = PartitionWriter(TABLE, staging, row_group_rows=5, max_file_bytes=1)
        writer.write(batch(0, 50, "v2"))
        raise RuntimeError("source died")
    assert store.manifest(TABLE, DAY) == first
    assert store.read_partition(TABLE, DAY).num_rows == 10


def test_empty_partition_is_one_file_with_the_schema(store: BronzeStore) -> None:
    manifest = publish(store, [], max_file_bytes=1 << 30)
    assert manifest.rows == 0 and len(manifest.files) == 1
    assert store.read_partition(TABLE, DAY).schema == TABLE.arrow_schema


def test_readers_ignore_staging_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    publish(store, [batch(0, 10, "v1")], max_file_bytes=1 << 30)
    with store.staging(TABLE, DAY) as staging:
        PartitionWriter(TABLE, staging, row_group_rows=1, max_file_bytes=1).write(batch(0, 7, "x"))
        table_root = tmp_path / partition_prefix(TABLE, DAY).rsplit("/", 1)[0]
        dataset = ds.dataset(table_root, format="parquet", partitioning="hive")
        assert dataset.to_table().num_rows == 10


def test_unpublished_partition_reads_as_an_error(store: BronzeStore) -> None:
    assert store.manifest(TABLE, DAY) is None
    with pytest.raises(BronzeError, match="not published"):
        store.read_partition(TABLE, DAY)


def test_missing_bucket_is_named_with_the_fix(s3_server: object) -> None:
    store = S3Store("no-such-bucket-acode")
    with (
        pytest.raises(BronzeError, match=r"no-such-bucket-acode.*(does not exist|NoSuchBucket)"),
        store.staging(TABLE, DAY),
    ):
        pass


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://farmarcas-production-bronze", ("s3", "farmarcas-production-bronze")),
        ("s3://farmarcas-backup-acode/lake/", ("s3", "farmarcas-backup-acode/lake")),
    ],
)
def test_parse_bronze_urls(url: str, expected: tuple[str, str]) -> None:
    assert parse_bronze_url(url) == expected


@pytest.mark.parametrize("url", ["gs://bucket", "s3://", "   ", "hdfs://x/y"])
def test_bad_bronze_urls_name_the_setting(url: str) -> None:
    with pytest.raises(ConfigError, match="ACODE_BRONZE_URL"):
        open_store(url)
