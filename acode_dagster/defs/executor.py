"""The code location's executor: one process for a run that syncs one table, one per sync else.

Dagster's default executor starts a fresh Python process for every step. For the commonest run,
one table and one day (``dagster asset materialize``, ``acode sync``, a catch-up, the UI's
Materialize), that is a process that imports Dagster and loads every definition again before the
sync starts, and a second one for the table's freshness check: about 3 s each on the project's
machine, a quarter of a 2M-row sync. A run whose plan holds at most one step that reads the
source therefore runs its steps in the run's own process (memory is the sync's: the rest is a
few footers and a query). A run with several syncs (the daily schedule's three tables, a
backfill's days) keeps one process per step, so the syncs run side by side, as many as the
``acode_source`` pool allows, and one that dies does not take the others with it.

Both executors honour the pool limits and the retry policy the same way; the choice is made per
run, from its plan, so a re-execution of one failed step of the daily run is in process too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg

# Dagster's own in-process executor class, built here with the retry mode the run's config gave
# the multiprocess one (its public executor definition reads only its own config).
from dagster._core.executor.in_process import InProcessExecutor

if TYPE_CHECKING:
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._core.execution.retries import RetryMode
    from dagster._core.execution.step_dependency_config import StepDependencyConfig

SOURCE_POOL = "acode_source"
"""The pool every bronze sync step is in (the steps that read a MySQL server)."""


def syncs_in(execution_plan: ExecutionPlan) -> int:
    """How many steps of the plan read the source."""
    return sum(
        1
        for key in execution_plan.step_keys_to_execute
        if execution_plan.get_step_by_key(key).pool == SOURCE_POOL
    )


class OneProcessPerSync(dg.Executor):
    """In process for a plan with at most one sync; one process per step otherwise."""

    def __init__(self, multiprocess: dg.Executor):
        self.multiprocess = multiprocess
        self.in_process = InProcessExecutor(retries=multiprocess.retries, marker_to_close=None)

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[dg.DagsterEvent]:
        if syncs_in(execution_plan) <= 1:
            return self.in_process.execute(plan_context, execution_plan)
        return self.multiprocess.execute(plan_context, execution_plan)

    @property
    def retries(self) -> RetryMode:
        return self.multiprocess.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self.multiprocess.step_dependency_config


_DEFAULT = dg.multi_or_in_process_executor


@dg.executor(
    name="acode_executor",
    # Dagster's default executor's config (``multiprocess: {...}`` or ``in_process: {}``), so
    # every run config written for the default still applies.
    config_schema=_DEFAULT.config_schema.as_field(),
    requirements=_DEFAULT.get_requirements,
)
def acode_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's default executor, except that a multiprocess run with one sync runs in process.

    ``in_process`` in the run config still runs every plan in process."""
    assert _DEFAULT.executor_creation_fn is not None
    chosen = _DEFAULT.executor_creation_fn(init_context)
    return chosen if isinstance(chosen, InProcessExecutor) else OneProcessPerSync(chosen)


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=acode_executor)
