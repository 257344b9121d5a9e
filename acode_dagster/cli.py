"""``acode``: the operator's command line.

``acode quickstart`` is the README's first command: it starts the local MariaDB pair, loads demo
days, and materializes them through Dagster in a persistent Dagster home, so the UI shows them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from acode_dagster.errors import AcodeError, ConfigError
from acode_dagster.settings import Settings

log = logging.getLogger("acode")


def _stack(settings: Settings) -> Any:
    from acode_dagster.localstack import LocalStack

    return LocalStack(settings.stack_home)


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack(settings)
    if args.action == "start":
        started = time.monotonic()
        stack.start()
        print(
            f"local MariaDB pair is up in {settings.stack_home} "
            f"({time.monotonic() - started:.1f} s)"
        )
        _print_status(stack)
    elif args.action == "stop":
        stack.stop()
        print("local MariaDB pair stopped")
    else:
        _print_status(stack)
    return 0


def _print_status(stack: Any) -> None:
    for role, status in stack.status().items():
        state = "running" if status.running else "stopped"
        line = f"  {role:<8} 127.0.0.1:{status.port}  {state}"
        if role == "backup" and status.running:
            line += (
                f"  replication io={getattr(status, 'io_running', None)} "
                f"sql={getattr(status, 'sql_running', None)} "
                f"behind={getattr(status, 'seconds_behind', None)}s"
            )
        print(line)


def _demo_days(args: argparse.Namespace) -> list[date]:
    from acode_dagster.demo.loader import last_complete_days

    try:
        end = date.fromisoformat(args.end_day) if args.end_day else None
        return last_complete_days(args.days, end)
    except ValueError as exc:
        raise ConfigError(
            f"bad --days/--end-day: {exc}; use --days N --end-day YYYY-MM-DD"
        ) from None


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from acode_dagster.demo.loader import load_days

    stack = _stack(settings)
    stack.start()
    days = _demo_days(args)
    report = load_days(stack.endpoint("primary", admin=True), days, seed=args.seed)
    stack.wait_replica_caught_up()
    print(f"loaded demo data for {', '.join(map(str, days))}: {report}")
    return 0


def ensure_dagster_home(settings: Settings) -> Path:
    """A persistent Dagster home, so runs started here are in the UI afterwards."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def materialize_days(days: Sequence[date]) -> list[dict[str, Any]]:
    """Run ``bronze_acode_job`` for each day in the Dagster instance; one summary row per asset."""
    import dagster as dg

    from acode_dagster.definitions import defs

    job = defs.resolve_job_def("bronze_acode_job")
    rows: list[dict[str, Any]] = []
    with dg.DagsterInstance.get() as instance:
        for day in days:
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            if not result.success:
                failure = next(
                    (e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None
                )
                reason = failure.message if failure else "see the run in the Dagster UI"
                raise AcodeError(f"run {result.run_id} for {day} failed: {reason}")
            for event in result.get_asset_materialization_events():
                materialization = event.materialization
                meta: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
                rows.append(
                    {
                        "day": day.isoformat(),
                        "asset": materialization.asset_key.path[-1],
                        "rows": meta["dagster/row_count"],
                        "files": meta["files"],
                        "mb": round(int(meta["bytes"]) / 1e6, 2),
                        "seconds": meta["seconds"],
                        "source": meta["source_server"],
                        "run": result.run_id[:8],
                    }
                )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers))
    for row in rows:
        print("  ".join(str(row[h]).ljust(widths[h]) for h in headers))


def cmd_quickstart(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    cmd_stack(argparse.Namespace(action="start"), settings)
    cmd_demo(args, settings)
    home = ensure_dagster_home(settings)
    days = _demo_days(args)
    print(
        f"materializing {len(days)} day(s) of the bronze assets through Dagster "
        f"(DAGSTER_HOME={home}) ..."
    )
    rows = materialize_days(days)
    _print_table(rows)
    print(
        f"\n{sum(r['rows'] for r in rows):,} rows in {len(rows)} partitions landed in "
        f"{settings.bronze_url} in {time.monotonic() - started:.0f} s.\n"
        f"See them in the UI: `make dev`, then http://127.0.0.1:3000 (DAGSTER_HOME={home})."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acode",
        description="Operate the ACODE bronze layer: the local MariaDB pair, demo data, syncs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or show the local MariaDB primary+replica")
    stack.add_argument("action", choices=["start", "stop", "status"])
    stack.set_defaults(func=cmd_stack)

    for name, func, help_text in (
        ("demo", cmd_demo, "load deterministic demo days into the local primary"),
        (
            "quickstart",
            cmd_quickstart,
            "start the pair, load demo days and materialize them through Dagster",
        ),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--days", type=int, default=3, help="how many days (default 3)")
        command.add_argument("--end-day", help="last day, YYYY-MM-DD (default: yesterday, local)")
        command.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
        command.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Our progress lines at INFO; libraries (alembic, botocore, ...) only when they warn.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("acode_dagster").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, Settings.from_env()))
    except AcodeError as exc:
        print(f"acode: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
