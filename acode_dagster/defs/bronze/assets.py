"""One daily-partitioned bronze asset per ACODE table, all built from the table descriptions."""

from collections.abc import Iterator
from datetime import date

import dagster as dg

from acode_dagster.bronze.lease import Holder
from acode_dagster.bronze.mirror import mirror
from acode_dagster.bronze.publish import Publisher, blocking_failures
from acode_dagster.bronze.store import Manifest
from acode_dagster.defs.bronze.checks import (
    GROUP,
    bronze_key,
    check_result,
    mirror_result,
    partition_check_specs,
    row_count_history,
)
from acode_dagster.defs.bronze.partitions import daily_partitions
from acode_dagster.defs.observability.business import business_metadata
from acode_dagster.defs.observability.resources import MetricsResource
from acode_dagster.defs.redundancy.state import read_route
from acode_dagster.defs.resources import AcodeSourcesResource, BronzeResource, ReplicatorResource
from acode_dagster.errors import AcodeError
from acode_dagster.failover import opposite
from acode_dagster.observability.sla import SlaThresholds, stage_of
from acode_dagster.quality import evaluate_partition
from acode_dagster.replicator import SyncResult
from acode_dagster.routing import Role
from acode_dagster.tables import BRONZE_DATABASE, TABLES, Table, parse_partition_key


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=f"{c.mysql_type} -> {c.arrow_type}",
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in table.columns
        ]
    )


def partition_metadata(manifest: Manifest, url: str) -> dict[str, dg.MetadataValue]:
    """What every materialization of a partition records of its published version, however it
    was published (a sync, a release from quarantine), so the UI plots them alike."""
    return {
        "dagster/row_count": dg.MetadataValue.int(manifest.rows),
        "bytes": dg.MetadataValue.int(manifest.bytes),
        "files": dg.MetadataValue.int(len(manifest.files)),
        "replicator": dg.MetadataValue.text(manifest.replicator),
        "bronze_url": dg.MetadataValue.url(url) if "://" in url else dg.MetadataValue.path(url),
        "version": dg.MetadataValue.text(manifest.version),
    }


def materialization_metadata(
    result: SyncResult,
    route_source: str,
    route_bucket: str,
    server: str,
    *,
    sla: SlaThresholds | None = None,
) -> dict[str, dg.MetadataValue]:
    return {
        **partition_metadata(result.manifest, result.bronze_url),
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "rows_per_second": dg.MetadataValue.float(round(result.rows_per_second, 1)),
        # The weekly report reads these two (and "seconds") by name.
        "sync_minutes": dg.MetadataValue.float(round(result.seconds / 60, 3)),
        "sla": dg.MetadataValue.text(stage_of(result.seconds, sla or SlaThresholds())),
        "source_server": dg.MetadataValue.text(server),
        "source_role": dg.MetadataValue.text(route_source),
        "bucket_role": dg.MetadataValue.text(route_bucket),
        **{key: _metadata_value(value) for key, value in result.extra.items()},
        **business_metadata(result.business),
    }


def _metadata_value(value: int | float | str) -> dg.MetadataValue:
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return dg.MetadataValue.text(value)


def build_bronze_asset(table: Table) -> dg.AssetsDefinition:
    @dg.asset(
        key=bronze_key(table),
        group_name=GROUP,
        partitions_def=daily_partitions,
        # Bounds the syncs reading the source, however launched (acode_dagster.runs.SOURCE_POOL).
        pool="acode_source",
        description=table.description,
        kinds={"mysql", "parquet"},
        check_specs=partition_check_specs(table),
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=table.thresholds.freshness_fail,
            warn_window=table.thresholds.freshness_warn,
        ),
        owners=["team:data-engineering"],
        tags={"acode/table": table.name, **{f"acode/{k}": v for k, v in table.tags.items()}},
        metadata={
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": f"{BRONZE_DATABASE}.{table.name}",
            "partition_rule": (
                "full snapshot taken when the day is synced"
                if table.is_snapshot
                else f"rows whose {table.partition_column} falls on the local day"
            ),
            "critical_columns": ", ".join(table.critical_columns),
            "expected_daily_rows": table.expected_daily_rows,
        },
    )
    def bronze_asset(
        context: dg.AssetExecutionContext,
        acode_sources: AcodeSourcesResource,
        bronze: BronzeResource,
        replicator: ReplicatorResource,
        metrics: MetricsResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        day = parse_partition_key(context.partition_key)
        route = read_route(context.instance)
        source = acode_sources.endpoint(route.source)
        store = bronze.store(route.bucket)
        context.log.info(
            f"route: source={route.source} ({source.address}), bucket={route.bucket} ({store.url})"
        )
        # Audited in staging on the store and server this run uses, whatever the route says by
        # the time the audit runs.
        history = row_count_history(context.instance, table, day)
        publisher = Publisher(
            holder=Holder.here(context.run.run_id, purpose=_purpose(context)),
            audit=lambda files: evaluate_partition(table, day, files, source, history),
            lease=bronze.lease_policy(),
            log=context.log.info,
        )
        try:
            sync = replicator.build(context.log.info, route.source, route.bucket).sync
            result = sync(table, day, source, store, publisher)
        except AcodeError as exc:
            attempt = context.retry_number
            if not exc.transient or attempt >= replicator.retries:
                raise
            # The retry reads the route again, so after a failover it goes to the backup.
            wait = replicator.retry_base_s * 2**attempt
            context.log.warning(
                f"{exc} — retry {attempt + 1} of {replicator.retries} in {wait:.0f} s, on the "
                "route then in force"
            )
            raise dg.RetryRequested(max_retries=replicator.retries, seconds_to_wait=wait) from exc
        # Never raises, and is bounded: a metrics endpoint that is down cannot fail the sync.
        emitter = metrics.client(context.log.warning)
        emitter.sync(result, side=route.source, bucket=route.bucket, replicator=replicator.kind)
        if result.published:
            yield dg.MaterializeResult(
                metadata=materialization_metadata(
                    result,
                    route.source,
                    route.bucket,
                    source.address,
                    sla=replicator.sla_thresholds(),
                )
            )
        for verdict in result.verdicts:
            log = context.log.info if verdict.passed else context.log.warning
            log(f"check {verdict.check} {verdict.outcome}: {verdict.measured}")
            yield check_result(verdict, result)
        if result.published:
            mirrored = mirror_published(
                context, bronze, table, day, published_on=route.bucket, result=result
            )
            emitter.check(
                table.name,
                result.partition,
                mirrored.check_name or "mirror",
                mirrored.passed,
                mirrored.severity.value,
            )
            emitter.flush()
            yield mirrored
        if not result.published:
            failed = ", ".join(
                f"{v.check} ({v.measured})" for v in blocking_failures(result.verdicts)
            )
            raise dg.Failure(
                description=(
                    f"{table.name} {day:%Y-%m-%d}: the new version {result.manifest.version} "
                    f"failed {failed}. It is quarantined at {result.kept_at}; the published "
                    "version is unchanged. Review it with `acode quarantine show "
                    f"{table.name} {day:%Y-%m-%d}`; publish it anyway with `acode quarantine "
                    "release ... --reason '...'`, or drop it with `acode quarantine discard`"
                ),
                metadata={
                    "bronze_version": dg.MetadataValue.text("quarantined"),
                    "quarantine_url": dg.MetadataValue.text(result.kept_at),
                },
                allow_retries=False,
            )

    return bronze_asset


def mirror_published(
    context: dg.AssetExecutionContext,
    bronze: BronzeResource,
    table: Table,
    day: date,
    *,
    published_on: Role,
    result: SyncResult,
) -> dg.AssetCheckResult:
    """Copy the version just published to the other bucket, verified; a failure is a WARN (the
    repair after fail-back copies it), never a failed sync: the published version stands."""
    other = opposite(published_on)
    if not bronze.mirrored:
        return mirror_result(None, other=other)
    copy = mirror(
        bronze.store(published_on),
        bronze.store(other),
        table,
        day,
        holder=Holder.here(context.run.run_id, purpose=f"mirror to the {other} bucket"),
        policy=bronze.lease_policy(),
        log=context.log.info,
        expected=result.manifest,
    )
    if not copy.done:
        context.log.warning(
            f"{table.name} {day:%Y-%m-%d} is not mirrored to the {other} bucket: {copy.detail}"
        )
    return mirror_result(copy, other=other)


def _purpose(context: dg.AssetExecutionContext) -> str:
    """How the run was launched, for whoever waits for its lease."""
    tags = context.run.tags
    for tag, what in (
        ("dagster/backfill", "backfill"),
        ("dagster/schedule_name", "schedule"),
        ("dagster/sensor_name", "sensor"),
        ("acode/launched_by", ""),
    ):
        if tag in tags:
            return f"{what} {tags[tag]}".strip()
    return "sync"


bronze_assets = [build_bronze_asset(table) for table in TABLES]
