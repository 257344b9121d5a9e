"""How the health sensor judges and reacts: the failover policy and the probes' limits."""

from datetime import timedelta

import dagster as dg

from acode_dagster.failover import Policy
from acode_dagster.probes import DEFAULT_BUDGET_S, ProbeSettings


class RedundancyResource(dg.ConfigurableResource):
    """Hysteresis, probe limits and catch-up window: the ACODE_* settings of the same names
    (their defaults and meanings are in :mod:`acode_dagster.settings`); ``probe_budget_s`` is
    ACODE_PROBE_BUDGET_S, the longest a tick's whole round of probes may take."""

    failover_after: int
    failback_after: int
    failback_dwell_s: float
    probe_timeout_s: float
    rpo_s: float
    lag_warn_s: float
    catchup_days: int
    probe_budget_s: float = DEFAULT_BUDGET_S
    replica_check_days: int = 3
    """ACODE_REPLICA_CHECK_DAYS: complete days the replica check compares."""
    replica_check_wait_s: float = 60.0
    """ACODE_REPLICA_CHECK_WAIT_S: the longest it waits for a lagging replica."""

    def policy(self) -> Policy:
        return Policy(
            fail_after=self.failover_after,
            recover_after=self.failback_after,
            min_dwell=timedelta(seconds=self.failback_dwell_s),
        )

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(
            timeout_s=self.probe_timeout_s,
            rpo_s=self.rpo_s,
            lag_warn_s=self.lag_warn_s,
            budget_s=self.probe_budget_s,
        )
