"""CI: `make dev` serves what `make quickstart` landed, with the sensors and schedule running.

Run by .ci/run while `make dev` runs in the background on the quickstart's Dagster home. Standard
library only (it runs under the system python3). Exit 1 with what is missing.
"""

import json
import sys
import time
import urllib.request

UI = "http://127.0.0.1:3000"
TABLES = (
    "farmarcas_si_analitico_diario",
    "farmarcas_si_analitico_diario_complemento",
    "farmarcas_si_analitico_diario_produtos",
)
MATERIALIZATIONS = "\n".join(
    f'm{i}: assetOrError(assetKey: {{path: ["bronze_acode", "{t}"]}}) {{ ... on Asset {{ '
    "assetMaterializations(limit: 10) { partition } } }"
    for i, t in enumerate(TABLES)
)
QUERY = (
    """
{
  assetNodes { assetKey { path } groupName hasAssetChecks }
  workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
    __typename ... on RepositoryLocation { repositories {
      sensors { name sensorState { status } }
      schedules { name scheduleState { status } } } } } } } }
  redundancy: assetOrError(assetKey: {path: ["redundancy"]}) {
    ... on Asset { assetObservations(limit: 1) { description } } }
"""
    + MATERIALIZATIONS
    + "\n}"
)


def graphql() -> dict:
    request = urllib.request.Request(
        f"{UI}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def problems(data: dict) -> list[str]:
    found = []
    nodes = {tuple(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    for table in TABLES:
        node = nodes.get(("bronze_acode", table))
        if node is None or node["groupName"] != "bronze_acode" or not node["hasAssetChecks"]:
            found.append(f"asset bronze_acode/{table} with its checks in group bronze_acode")
    for i, table in enumerate(TABLES):
        landed = (data[f"m{i}"] or {}).get("assetMaterializations") or []
        if len(landed) < 3:
            found.append(f"the quickstart's 3 materializations of {table} (saw {len(landed)})")
    [entry] = data["workspaceOrError"]["locationEntries"]
    [repository] = entry["locationOrLoadError"].get("repositories") or [{}]
    running = {
        s["name"] for s in repository.get("sensors", []) if s["sensorState"]["status"] == "RUNNING"
    }
    running |= {
        s["name"]
        for s in repository.get("schedules", [])
        if s["scheduleState"]["status"] == "RUNNING"
    }
    for name in (
        "acode_health_sensor",
        "acode_alert_sensor",
        "acode_freshness_sensor",
        "acode_daily_schedule",
        "bronze_sweep_schedule",
    ):
        if name not in running:
            found.append(f"{name} running")
    if not (data["redundancy"] or {}).get("assetObservations"):
        found.append("a health tick recorded on the redundancy asset (the daemon's sensors)")
    return found


def main() -> None:
    deadline = time.monotonic() + 240
    missing = ["the webserver on " + UI]
    while time.monotonic() < deadline:
        try:
            missing = problems(graphql())
        except (OSError, KeyError, TypeError, ValueError) as exc:
            missing = [f"an answer from {UI}/graphql ({type(exc).__name__}: {exc})"]
        if not missing:
            print(
                "make dev: 3 assets with checks, the quickstart's partitions, 3 sensors and the "
                "2 schedules running, the health sensor ticking"
            )
            return
        time.sleep(5)
    sys.exit("make dev does not show: " + "; ".join(missing))


if __name__ == "__main__":
    main()
