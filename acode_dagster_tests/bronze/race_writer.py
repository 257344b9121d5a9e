"""One writer of a bronze partition in a process of its own; test_races.py starts several at once.

    python race_writer.py STACK_HOME BRONZE_URL TABLE DAY

It imports everything, prints ``READY`` and waits for a line on stdin, so that the writers of a
race all start their sync at the same moment (not when their imports happen to finish). Then it
syncs the partition from the pair's primary with the embedded replicator, configured the way a
run is: ``ACODE_MAX_FILE_MB`` (the file bound), ``ACODE_LEASE_TTL_S`` and ``ACODE_LEASE_WAIT_S``
(read by the default publisher). ``RACE_ROWS_PER_GROUP`` sets the batch and row-group size, so
that a small partition still makes several files under a 1 MB bound. ``RACE_STOP_AFTER_FILES=N``
makes it stop itself (SIGSTOP) once it has staged N files, so a test can pause it mid-staging
however fast the sync runs.

Every progress line goes to stdout; the last line is ``OUTCOME {json}``: ``published`` or
``quarantined`` (with the version, files and check outcomes), ``busy`` (LeaseBusy: the holder
named) or ``lost`` (LeaseLost). Anything else is a traceback and exit status 1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from acode_dagster.bronze.lease import LeaseBusy, LeaseLost
from acode_dagster.bronze.store import open_store
from acode_dagster.localstack import LocalStack
from acode_dagster.replicator import EmbeddedReplicator
from acode_dagster.settings import Settings
from acode_dagster.tables import get_table

BUSY, LOST = 3, 4


def say(line: str) -> None:
    print(line, flush=True)


def outcome(**fields: Any) -> None:
    say("OUTCOME " + json.dumps(fields, sort_keys=True))


def stop_after_files(count: int) -> None:
    """SIGSTOP this process once ``count`` files are in staging (on either kind of store)."""
    from acode_dagster.bronze import store as stores

    staged: list[Path] = []
    for kind in (stores._LocalStaging, stores._S3Staging):
        original = kind.add_file

        def add_file(self: Any, path: Path, _original: Any = original) -> None:
            _original(self, path)
            staged.append(path)
            if len(staged) == count:
                say(f"STOPPING after {count} staged file(s)")
                os.kill(os.getpid(), signal.SIGSTOP)

        kind.add_file = add_file  # type: ignore[method-assign]


def main() -> int:
    stack_home, url, table_name, day_text = sys.argv[1:5]
    table, day = get_table(table_name), date.fromisoformat(day_text)
    rows_per_group = int(os.environ.get("RACE_ROWS_PER_GROUP", "65536"))
    replicator = EmbeddedReplicator(
        batch_rows=rows_per_group,
        row_group_rows=rows_per_group,
        max_file_bytes=Settings.from_env().max_file_mb * 1024 * 1024,
        log=say,
    )
    source = LocalStack(Path(stack_home)).endpoint("primary")
    store = open_store(url)
    if int(os.environ.get("RACE_STOP_AFTER_FILES", "0")):
        stop_after_files(int(os.environ["RACE_STOP_AFTER_FILES"]))
    say(f"READY pid {os.getpid()}")
    sys.stdin.readline()
    try:
        result = replicator.sync(table, day, source, store)
    except LeaseBusy as busy:
        outcome(outcome="busy", message=str(busy), holder=asdict(busy.holder))
        return BUSY
    except LeaseLost as lost:
        outcome(outcome="lost", message=str(lost))
        return LOST
    outcome(
        outcome="published" if result.published else "quarantined",
        version=result.manifest.version,
        published_at=result.manifest.published_at,
        files=[f.name for f in result.manifest.files],
        rows=result.rows,
        checks={v.check: v.outcome for v in result.verdicts},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
