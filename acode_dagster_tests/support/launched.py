"""Runs launched the way the UI and the daemon launch them, for tests that terminate them.

A code server serves the code location (``acode_dagster.definitions``) from a process of its own,
the instance's run launcher starts a run worker from it, and ``run_launcher.terminate`` (the UI's
Terminate, and what run monitoring calls) asks the code server to interrupt that worker. Nothing
here is a stand-in: the interrupt reaches the sync through Dagster's own path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

from acode_dagster.defs.bronze.checks import bronze_key
from acode_dagster.tables import Table

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "acode"
JOB = "bronze_acode_job"


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    """The code location served by a code server of its own, started with the environment as
    it is now (its run workers inherit it), as the daemon starts one."""
    target = ModuleTarget(
        module_name="acode_dagster.definitions",
        attribute=None,
        working_directory=str(ROOT),
        location_name=LOCATION,
    )
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


def launch_partition(
    context: WorkspaceProcessContext,
    table: Table,
    day: date,
    *,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Launch ``bronze_acode_job`` for one table's partition through the instance's run launcher
    (not its queue), as the UI's Materialize does; the run's id."""
    instance = context.instance
    request = context.create_request_context()
    location = request.get_code_location(LOCATION)
    (repository,) = location.get_repositories().values()
    remote_job = location.get_job(
        JobSubsetSelector(
            location_name=LOCATION,
            repository_name=repository.name,
            job_name=JOB,
            op_selection=None,
            asset_selection=[bronze_key(table)],
        )
    )
    config = dict(run_config or {})
    plan = location.get_execution_plan(
        remote_job, config, step_keys_to_execute=None, known_state=None, instance=instance
    )
    run = instance.create_run(
        job_name=JOB,
        run_id=None,
        run_config=config,
        resolved_op_selection=None,
        step_keys_to_execute=None,
        status=None,
        tags={**remote_job.tags, "dagster/partition": day.isoformat(), **(tags or {})},
        root_run_id=None,
        parent_run_id=None,
        job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=plan.execution_plan_snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        op_selection=None,
        asset_selection=remote_job.asset_selection,
        asset_check_selection=remote_job.asset_check_selection,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_graph=repository.asset_graph,
    )
    instance.launch_run(run.run_id, request)
    return run.run_id


def monitor_runs_once(context: WorkspaceProcessContext) -> None:
    """One iteration of the daemon's run monitoring over every run in progress."""
    for error in execute_run_monitoring_iteration(context, logging.getLogger("run_monitoring")):
        if error is not None:
            raise AssertionError(f"run monitoring failed: {error.to_string()}")
