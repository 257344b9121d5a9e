"""The two buckets as copies of one bronze layer: inspect, compare, mirror and repair.

Every published partition is mirrored to the other bucket right after it is published, and
verified there against its manifest (files, sizes, rows from the Parquet footers, SHA-256 of the
bytes). A copy that could not be made (the other bucket is down: that is why the route moved)
is made by the repair, which compares the two buckets partition by partition and copies the good
copy over the missing, older or damaged one. What neither bucket holds whole is left to the
catch-up, which re-syncs it from the source.

A copy is written like any new version: under the target partition's lease, into staging,
verified there, then swapped in with the fenced publish (:mod:`acode_dagster.bronze.publish`), so
a mirror never interleaves with a sync of the same partition and a killed mirror leaves the
target as it was. The target's ``_SUCCESS`` is the source's manifest byte for byte: the same
version, files, rows and checksums, so "the same partition" means one manifest in both buckets.

Which copy wins is a pure function (:func:`decide`) of what the two buckets hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Literal

from acode_dagster.bronze.lease import Holder, LeasePolicy, hold
from acode_dagster.bronze.store import BronzeStore, Manifest, VersionFiles
from acode_dagster.errors import AcodeError, redact
from acode_dagster.routing import BACKUP, PRIMARY, Role
from acode_dagster.tables import Table

CopyState = Literal["intact", "damaged", "absent", "unreachable"]
Action = Literal["in_sync", "copy_to_backup", "copy_to_primary", "resync", "missing", "unknown"]
COPY_ACTIONS: dict[Action, tuple[Role, Role]] = {
    "copy_to_backup": (PRIMARY, BACKUP),
    "copy_to_primary": (BACKUP, PRIMARY),
}


@dataclass(frozen=True)
class Copy:
    """What one bucket holds of one partition, and what is wrong with it."""

    state: CopyState
    manifest: Manifest | None = None
    problems: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if self.state == "intact" and self.manifest is not None:
            return f"version {self.manifest.version[:12]}, {self.manifest.rows:,} rows"
        if self.state == "absent":
            return "absent"
        return f"{self.state}: {'; '.join(self.problems)}"


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str

    @property
    def copies(self) -> tuple[Role, Role] | None:
        """``(from, to)`` when the decision is to copy one bucket's version over the other's."""
        return COPY_ACTIONS.get(self.action)


def verify(
    manifest: Manifest,
    sizes: dict[str, int | None],
    rows: dict[str, int] | None = None,
    digests: dict[str, str] | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """Everything in which a copy differs from its manifest (empty: it is the manifest's).

    ``rows`` (from the footers) and ``digests`` are checked when given; a manifest written
    before checksums were kept (an empty ``sha256``) is checked on sizes and rows only.
    ``extra``: Parquet files beside the manifest's, which readers that list the folder see.
    """
    problems: list[str] = []
    for file in manifest.files:
        size = sizes.get(file.name)
        if size is None:
            problems.append(f"{file.name} is missing")
            continue
        if size != file.bytes:
            problems.append(f"{file.name} has {size:,} bytes, the manifest {file.bytes:,}")
            continue
        if rows is not None and rows.get(file.name) != file.rows:
            problems.append(
                f"{file.name} holds {rows.get(file.name)} rows, the manifest {file.rows:,}"
            )
        if digests is not None and file.sha256 and digests.get(file.name) != file.sha256:
            problems.append(f"{file.name}'s SHA-256 differs from the manifest's")
    problems += [f"{name} is not in the manifest" for name in sorted(extra)]
    return problems


def inspect(store: BronzeStore, table: Table, day: date, *, checksums: bool = False) -> Copy:
    """What ``store`` holds of (table, day); ``checksums`` reads every byte to hash it."""
    try:
        manifest = store.manifest(table, day)
    except (AcodeError, OSError) as exc:
        # The bucket (or folder) cannot be read at all: nothing is known of its copy.
        return Copy("unreachable", problems=(redact(str(exc)),))
    except (ValueError, TypeError, KeyError) as exc:
        return Copy("damaged", problems=(f"the manifest does not parse: {exc}",))
    if manifest is None:
        return Copy("absent")
    try:
        files = store.published(table, day)
        listed = store.visible_files(table, day)
        problems = _verify_files(manifest, files, checksums=checksums, listed=listed)
    except AcodeError as exc:
        return Copy("unreachable", manifest, (str(exc),))
    except (OSError, ValueError) as exc:
        # A file that cannot be opened or is not Parquet: the copy is damaged.
        return Copy("damaged", manifest, (f"{type(exc).__name__}: {exc}",))
    return Copy("damaged" if problems else "intact", manifest, tuple(problems))


def _verify_files(
    manifest: Manifest, files: VersionFiles, *, checksums: bool, listed: Sequence[str] = ()
) -> list[str]:
    sizes = files.sizes()
    named = {f.name for f in manifest.files}
    extra = [n for n in listed if n.endswith(".parquet") and n not in named]
    problems = verify(manifest, sizes, extra=extra)
    if problems:
        return problems  # reading footers or bytes of a file already known bad proves nothing
    rows = {
        f.name: footer.num_rows for f, footer in zip(manifest.files, files.footers(), strict=True)
    }
    return verify(manifest, sizes, rows, files.digests() if checksums else None)


def decide(primary: Copy, backup: Copy) -> Decision:
    """What to do about one partition, from what each bucket holds of it."""
    for role, copy in ((PRIMARY, primary), (BACKUP, backup)):
        if copy.state == "unreachable":
            return Decision("unknown", f"the {role} bucket could not be read: {copy.problems[0]}")
    good = {role for role, copy in ((PRIMARY, primary), (BACKUP, backup)) if copy.state == "intact"}
    if good == {PRIMARY, BACKUP}:
        assert primary.manifest is not None and backup.manifest is not None
        if primary.manifest == backup.manifest:
            return Decision("in_sync", "both buckets hold the same version")
        newer = _newer(primary.manifest, backup.manifest)
        older = BACKUP if newer == PRIMARY else PRIMARY
        return Decision(
            "copy_to_backup" if newer == PRIMARY else "copy_to_primary",
            f"the {newer} bucket holds a newer version than the {older} bucket",
        )
    if good:
        (source,) = good
        other = BACKUP if source == PRIMARY else PRIMARY
        copy = backup if other == BACKUP else primary
        return Decision(
            "copy_to_backup" if source == PRIMARY else "copy_to_primary",
            f"the {other} bucket's copy is {copy.summary}",
        )
    if primary.state == backup.state == "absent":
        return Decision("missing", "neither bucket holds the partition")
    return Decision("resync", "no bucket holds an intact copy")


def _newer(primary: Manifest, backup: Manifest) -> Role:
    """The bucket whose version was published last (ties broken by version, so both buckets'
    repairs agree whichever runs)."""
    key_primary = (_published(primary), primary.version)
    key_backup = (_published(backup), backup.version)
    return PRIMARY if key_primary >= key_backup else BACKUP


def _published(manifest: Manifest) -> datetime:
    try:
        return datetime.fromisoformat(manifest.published_at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- copying


@dataclass(frozen=True)
class Mirrored:
    """One copy of a partition from one bucket to the other, verified there."""

    table: str
    day: date
    source_url: str
    target_url: str
    done: bool
    detail: str
    """What was copied and how, or why nothing was (already there, or the error)."""
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    how: str = ""
    target_role: str = ""
    """Filled in by :func:`repair`, which knows the buckets' roles."""


def mirror(
    source: BronzeStore,
    target: BronzeStore,
    table: Table,
    day: date,
    *,
    holder: Holder,
    policy: LeasePolicy,
    log: Callable[[str], None] = lambda _: None,
    expected: Manifest | None = None,
    checksums: bool = False,
) -> Mirrored:
    """Copy the version ``source`` publishes of (table, day) to ``target`` and verify it there.

    ``expected``: the version the caller just published; when the source holds another by the
    time it is read (a newer sync), that one is mirrored instead, which is what the target
    should hold. A target that already holds the source's version, verified (with
    ``checksums``: every byte hashed), is left alone.
    Never raises for a bucket's fault: the result says what went wrong.
    """
    name = f"{table.name} {day:%Y-%m-%d}"
    started = time.perf_counter()

    def result(done: bool, detail: str, **figures: float | int | str) -> Mirrored:
        return Mirrored(
            table.name,
            day,
            source.partition_url(table, day),
            target.partition_url(table, day),
            done,
            detail,
            seconds=round(time.perf_counter() - started, 3),
            **figures,  # type: ignore[arg-type]
        )

    try:
        manifest = source.manifest(table, day)
        if manifest is None:
            return result(False, f"{source.url} holds no published {name} to mirror")
        if expected is not None and manifest.version != expected.version:
            log(f"{name}: {source.url} now publishes {manifest.version}, mirroring that one")
        with (
            hold(target.lease_records(table, day), holder, policy, name, log_wait=log) as lease,
            target.staging(table, day) as staging,
        ):
            # Decided again under the target's lease: a sync of the target may have published
            # a newer version meanwhile, which a mirror must not replace.
            there = inspect(target, table, day, checksums=checksums)
            if there.state == "intact" and there.manifest is not None:
                if there.manifest == manifest:
                    return result(True, f"{target.url} already holds version {manifest.version}")
                if _newer(manifest, there.manifest) == BACKUP:
                    return result(
                        False,
                        f"{target.url} holds a newer version ({there.manifest.version}) than "
                        f"{source.url} ({manifest.version}): left alone",
                    )
            how = {staging.add_copy(source, table, day, f.name) for f in manifest.files}
            problems = _verify_files(manifest, staging, checksums=True)
            if problems:
                return result(
                    False,
                    f"the copy of version {manifest.version} did not verify ({'; '.join(problems)})"
                    f": {source.url} changed or is damaged; nothing was published to {target.url}",
                )
            staging.publish(manifest, lease.ensure_held)
        log(
            f"{name}: version {manifest.version} mirrored {source.url} -> {target.url} "
            f"({len(manifest.files)} file(s), {manifest.bytes:,} bytes, {'/'.join(sorted(how))}), "
            "verified"
        )
        return result(
            True,
            f"version {manifest.version} copied and verified",
            files=len(manifest.files),
            bytes=manifest.bytes,
            how="/".join(sorted(how)),
        )
    except (AcodeError, OSError) as exc:
        # The target (or the source) is down or refuses: the repair after fail-back copies it.
        return result(False, redact(str(exc)))


# ---------------------------------------------------------------------- both buckets


@dataclass(frozen=True)
class PartitionDiff:
    table: str
    day: date
    primary: Copy
    backup: Copy
    decision: Decision


def diff(
    primary: BronzeStore,
    backup: BronzeStore,
    tables: Sequence[Table],
    days: Sequence[date],
    *,
    checksums: bool = False,
) -> list[PartitionDiff]:
    """Both buckets compared partition by partition, oldest day first."""
    found = []
    for day in sorted(days):
        for table in tables:
            p = inspect(primary, table, day, checksums=checksums)
            b = inspect(backup, table, day, checksums=checksums)
            found.append(PartitionDiff(table.name, day, p, b, decide(p, b)))
    return found


@dataclass
class RepairReport:
    checked: list[PartitionDiff] = field(default_factory=list)
    copied: list[Mirrored] = field(default_factory=list)
    failed: list[Mirrored] = field(default_factory=list)

    def left(self, action: Action) -> list[PartitionDiff]:
        return [d for d in self.checked if d.decision.action == action]


def repair(
    stores: dict[Role, BronzeStore],
    tables: Sequence[Table],
    days: Sequence[date],
    *,
    holder: Holder,
    policy: LeasePolicy,
    checksums: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> RepairReport:
    """Copy every partition one bucket holds better than the other across, and verify it."""
    from acode_dagster.tables import get_table

    report = RepairReport()
    report.checked = diff(stores[PRIMARY], stores[BACKUP], tables, days, checksums=checksums)
    for entry in report.checked:
        route = entry.decision.copies
        if route is None:
            continue
        log(
            f"{entry.table} {entry.day:%Y-%m-%d}: {entry.decision.why}; copying the {route[0]} "
            f"bucket's version to the {route[1]} bucket"
        )
        done = mirror(
            stores[route[0]],
            stores[route[1]],
            get_table(entry.table),
            entry.day,
            holder=holder,
            policy=policy,
            log=log,
            checksums=checksums,
        )
        done = replace(done, target_role=route[1])
        (report.copied if done.done else report.failed).append(done)
    return report


def present_days(
    stores: Sequence[BronzeStore], tables: Sequence[Table], days: Sequence[date]
) -> dict[tuple[str, date], list[int]]:
    """For each (table, day), the indexes of ``stores`` whose manifest is there (quick: one GET
    per bucket and partition; a bucket that cannot be read counts as not holding it)."""
    found: dict[tuple[str, date], list[int]] = {}
    for table in tables:
        for day in days:
            holders = []
            for index, store in enumerate(stores):
                try:
                    if store.manifest(table, day) is not None:
                        holders.append(index)
                except (AcodeError, OSError, ValueError):
                    continue
            found[(table.name, day)] = holders
    return found
