"""The real Dagster webserver and daemon, as subprocesses, on a private Dagster home.

What a person runs (``dagster-webserver -m acode_dagster.definitions`` and
``dagster-daemon run -m acode_dagster.definitions``), started on a free loopback port with the
platform's environment, reached only over HTTP: GraphQL for the API tests, a browser for the UI
tests. Each process gets its own process group, so stopping it also stops the code servers and
run workers it spawned; whatever escaped its group is found by its ``DAGSTER_HOME`` and killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from acode_dagster_tests.support.s3 import free_port

MODULE = "acode_dagster.definitions"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 5.0
GRPC_TIMEOUT_S = "180"
TAIL_LINES = 40

# Runs are queued and launched by the daemon, as in production; a few at a time, launched by
# parallel workers (starting a run worker imports the code location, which takes seconds), so a
# backfill of a handful of days runs side by side. A launch that timed out on a busy machine is
# queued again instead of failing the run.
DAGSTER_YAML = """\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: 4
    max_user_code_failure_retries: 3
    user_code_failure_retry_delay: 5
"""

TERMINAL_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
_BIN = Path(sys.executable).parent


class DagsterUIError(AssertionError):
    """The webserver or daemon did not come up, or GraphQL answered with an error."""


class DagsterUI:
    """A running webserver and daemon sharing one private Dagster home."""

    def __init__(self, home: Path, env: Mapping[str, str], log_dir: Path) -> None:
        self.home = home
        self.log_dir = log_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **env,
            "DAGSTER_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            # Starting a run waits for its worker to import the code location: on two busy cores
            # that can pass Dagster's default 60 s.
            "DAGSTER_GRPC_TIMEOUT_SECONDS": GRPC_TIMEOUT_S,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._session = requests.Session()
        self._repository: dict[str, str] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start_webserver(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the webserver; return once it answers and its code location has loaded."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(DAGSTER_YAML)
        command = [
            str(_BIN / "dagster-webserver"),
            *("-m", MODULE, "-h", "127.0.0.1", "-p", str(self.port)),
        ]
        self._spawn("webserver", command)
        deadline = time.monotonic() + timeout
        self._wait("the webserver to answer /server_info", self._server_answers, deadline)
        self._wait("the code location to load", self._location_loaded, deadline)

    def start_daemon(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the daemon; return once the webserver reports every daemon healthy."""
        self._spawn("daemon", [str(_BIN / "dagster-daemon"), "run", "-m", MODULE])
        deadline = time.monotonic() + timeout
        self._wait("the daemon to report healthy", self._daemon_healthy, deadline)

    def stop(self) -> list[int]:
        """Stop both process groups (SIGTERM, then SIGKILL); return the pids of strays that had
        left their group and had to be killed by their Dagster home."""
        _stop_groups(list(self.processes.values()))
        self._session.close()
        return _kill_by_dagster_home(str(self.home))

    def _spawn(self, name: str, command: list[str]) -> None:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=Path(__file__).resolve().parents[2],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, stopped as a whole
            )

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        last_error = ""
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise DagsterUIError(
                        f"the {name} exited with code {process.returncode} while waiting for "
                        f"{what}\n{self.log_tails()}"
                    )
            try:
                if ready():
                    return
            except requests.RequestException as exc:  # not listening yet
                last_error = str(exc)
            except DagsterUIError as exc:
                raise DagsterUIError(f"{exc}\n{self.log_tails()}") from exc
            if time.monotonic() > deadline:
                raise DagsterUIError(
                    f"timed out waiting for {what} (last error: {last_error or 'none'})\n"
                    f"{self.log_tails()}"
                )
            time.sleep(0.5)

    def log_tails(self, lines: int = TAIL_LINES) -> str:
        parts = []
        for name in self.processes:
            path = self.log_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- last {lines} lines of {path}\n{tail}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ readiness

    def _server_answers(self) -> bool:
        response = self._session.get(f"{self.base_url}/server_info", timeout=5)
        return response.status_code == 200

    def _location_loaded(self) -> bool:
        data = self.graphql(
            """
            query {
              workspaceOrError {
                __typename
                ... on PythonError { message }
                ... on Workspace {
                  locationEntries {
                    name
                    loadStatus
                    locationOrLoadError {
                      __typename
                      ... on PythonError { message }
                      ... on RepositoryLocation { repositories { name } }
                    }
                  }
                }
              }
            }
            """
        )
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise DagsterUIError(f"the workspace failed to load: {workspace.get('message')}")
        entries = workspace["locationEntries"]
        if not entries or any(entry["loadStatus"] != "LOADED" for entry in entries):
            return False
        for entry in entries:
            location = entry["locationOrLoadError"]
            if location["__typename"] == "PythonError":
                raise DagsterUIError(
                    f"code location {entry['name']} failed to load: {location['message']}"
                )
            for repository in location["repositories"]:
                self._repository = {
                    "repositoryLocationName": entry["name"],
                    "repositoryName": repository["name"],
                }
        return self._repository is not None

    def _daemon_healthy(self) -> bool:
        data = self.graphql(
            """
            query {
              instance {
                daemonHealth { allDaemonStatuses { daemonType required healthy } }
              }
            }
            """
        )
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return bool(statuses) and all(s["healthy"] for s in statuses if s["required"])

    # ------------------------------------------------------------------ API

    @property
    def repository(self) -> dict[str, str]:
        """``repositoryLocationName`` and ``repositoryName``, as GraphQL selectors spell them."""
        if self._repository is None:
            raise DagsterUIError("the code location has not loaded")
        return dict(self._repository)

    @property
    def location_name(self) -> str:
        return self.repository["repositoryLocationName"]

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST to ``/graphql``; the ``data`` of the answer, or an error naming what failed."""
        response = self._session.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            timeout=60,
        )
        try:
            body = response.json()
        except ValueError as exc:
            raise DagsterUIError(
                f"GraphQL answered HTTP {response.status_code}: {response.text[:500]}"
            ) from exc
        if body.get("errors"):
            messages = "; ".join(str(e.get("message")) for e in body["errors"])
            raise DagsterUIError(f"GraphQL errors: {messages}")
        response.raise_for_status()
        data: dict[str, Any] = body["data"]
        return data

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            """
            query($runId: ID!) {
              runOrError(runId: $runId) {
                __typename
                ... on Run { status }
                ... on PythonError { message }
              }
            }
            """,
            {"runId": run_id},
        )
        result = data["runOrError"]
        if result["__typename"] != "Run":
            raise DagsterUIError(f"run {run_id}: {result}")
        status: str = result["status"]
        return status

    def wait_for_run(self, run_id: str, timeout: float = 120) -> str:
        """Poll until the run ends; its final status."""
        deadline = time.monotonic() + timeout
        while (status := self.run_status(run_id)) not in TERMINAL_RUN_STATUSES:
            if time.monotonic() > deadline:
                raise DagsterUIError(
                    f"run {run_id} still {status} after {timeout:.0f} s\n{self.log_tails()}"
                )
            time.sleep(0.5)
        return status

    def run_errors(self, run_id: str) -> list[str]:
        """The messages of the run's failure events, for an assertion message."""
        data = self.graphql(
            """
            query($runId: ID!) {
              logsForRun(runId: $runId, limit: 1000) {
                __typename
                ... on EventConnection {
                  events {
                    __typename
                    ... on MessageEvent { message level }
                  }
                }
              }
            }
            """,
            {"runId": run_id},
        )
        events = data["logsForRun"].get("events", [])
        return [e["message"] for e in events if e.get("level") in ("ERROR", "CRITICAL")]


@contextmanager
def dagster_ui(
    workdir: Path, env: Mapping[str, str], *, start_daemon: bool = True
) -> Iterator[DagsterUI]:
    """Start the webserver (and the daemon, unless told not to: then call ``start_daemon``) in
    ``workdir`` (Dagster home and logs); stop them on exit, whatever happened."""
    ui = DagsterUI(workdir / "dagster_home", env, workdir / "logs")
    try:
        ui.start_webserver()
        if start_daemon:
            ui.start_daemon()
        yield ui
    finally:
        strays = ui.stop()
        if strays:
            warnings.warn(
                f"killed Dagster processes that had left their process group: {strays}",
                RuntimeWarning,
                stacklevel=2,
            )


# ---------------------------------------------------------------------- stopping


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_groups(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every group at once, give them ``STOP_TIMEOUT_S`` together, then SIGKILL."""
    groups = [p.pid for p in processes]  # start_new_session: each leader's pid is its group id
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    while any(_group_alive(pgid) for pgid in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in groups:
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)


def _kill_by_dagster_home(home: str) -> list[int]:
    """SIGKILL live processes whose environment names ``home`` as their DAGSTER_HOME (Linux)."""
    proc = Path("/proc")
    if not (proc / "self").exists():
        return []
    marker = f"DAGSTER_HOME={home}".encode()
    killed = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            zombie = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and marker in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed
