"""The Kubernetes deployment (``deploy/``) and the README as the manual.

The deployment cannot be applied here (no cluster, no Docker engine), so these tests hold its
files to what the platform and the chart read: the YAML parses, every secret setting reaches the
pods only as a reference to a Secret built by the ExternalSecret, the settings are real and
valid, the image serves the project's code location, and the values use the chart's keys (as its
schema and templates under ``helm/dagster`` in dagster-io/dagster name them).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_postgres import PostgresRunStorage

from acode_dagster.audit import AUDIT_DIR
from acode_dagster.bronze.iam import S3_ACTIONS
from acode_dagster.bronze.store import table_prefix
from acode_dagster.cli import build_parser
from acode_dagster.landing import PROBE_FOLDER
from acode_dagster.settings import SETTINGS, Settings
from acode_dagster.tables import TABLES
from acode_dagster_tests.support.iam import USES, allowed_actions, load_policy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
MANIFESTS = DEPLOY / "k8s" / "external-secret.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = ROOT / "README.md"

SECRET_SETTINGS = frozenset(s.name for s in SETTINGS if s.secret)
# Secrets read outside settings.py: the instance's password (the chart's dagster.yaml) and
# boto3's keys (IRSA in production, so none at all).
SECRETS = SECRET_SETTINGS | {
    "DAGSTER_PG_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}
# Non-secret variables the pods may get besides the platform's own settings.
OTHER_SETTINGS = frozenset({"AWS_DEFAULT_REGION", "AWS_REGION"})
AIRBYTE_STAGING = ("ACODE_AIRBYTE_STAGING_URL", "ACODE_AIRBYTE_BACKUP_STAGING_URL")
# Shapes of a credential written out: a Slack token, an AWS key id, a URL with a password, a
# PEM key, a 32-hex-digit key (PagerDuty's routing keys).
LITERAL_SECRETS = re.compile(
    r"xox[abposr]-[0-9A-Za-z-]+|AKIA[0-9A-Z]{16}|[a-z][a-z0-9+]*://[^\s/:@]+:[^\s/@]+@"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|\b[0-9a-f]{32}\b"
)

# Keys of the chart's values that these values use, from its schema (pydantic models under
# helm/dagster/schema/schema/charts/), so a misspelt key fails here instead of being ignored.
CHART_KEYS: dict[str, set[str]] = {
    "": {
        "dagsterWebserver", "dagster-user-deployments", "postgresql",
        "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
        "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
        "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
        "global", "retention", "concurrency", "additionalInstanceConfig",
        # Not in the schema's models but read by templates/role.yaml and rolebinding.yaml.
        "rbacEnabled",
    },
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName",
               "celeryConfigSecretName"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service", "pool"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments",
                                 "serviceAccount",
                                 # the subchart's values.yaml; its templates/role.yaml reads it
                                 "rbacEnabled"},
    "serviceAccount": {"create", "name", "annotations"},
    "deployment": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "replicaCount", "env", "envConfigMaps", "envSecrets",
        "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
        "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "labels", "volumeMounts", "volumes", "schedulerName", "initContainers",
        "sidecarContainers", "deploymentStrategy",
    },
    "runLauncher": {"type", "config"},
    "k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
        "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
        "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
    },
    "dagsterDaemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
        "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "checkDbReadyInitContainer",
        "livenessProbe", "readinessProbe", "startupProbe", "annotations", "runMonitoring",
        "runRetries", "sensors", "schedules", "backfills", "schedulerName", "logFormat",
        "volumeMounts", "volumes", "initContainerResources", "extraContainers",
        "extraPrependedInitContainers",
    },
    "runCoordinator": {"enabled", "type", "config"},
    "runRetries": {"enabled", "maxRetries", "retryOnAssetOrOpFailure"},
    # A free-form dict in the schema; these are the keys templates/configmap-instance.yaml reads.
    "runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                      "maxRuntimeSeconds", "maxResumeRunAttempts", "pollIntervalSeconds",
                      "freeSlotsAfterRunEndSeconds"},
    "concurrency": {"enabled", "pools", "runs"},
    "pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
    "tagConcurrencyLimit": {"key", "value", "limit"},
}  # fmt: skip


def _docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _values() -> dict[str, Any]:
    (values,) = _docs(VALUES)
    return values  # type: ignore[no-any-return]


def _manifest(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _docs(MANIFESTS) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{MANIFESTS.name} should hold one {kind} {name}, has {len(found)}"
    return found[0]  # type: ignore[no-any-return]


def _deployment() -> dict[str, Any]:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    return deployment  # type: ignore[no-any-return]


def _names(refs: list[dict[str, str]]) -> set[str]:
    return {ref["name"] for ref in refs}


def _mappings(node: Any) -> Iterator[dict[Any, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _mappings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _mappings(item)


def _external_secret_keys(name: str) -> dict[str, dict[str, str]]:
    spec = _manifest("ExternalSecret", name)["spec"]
    assert spec["target"]["name"] == name
    return {entry["secretKey"]: entry["remoteRef"] for entry in spec["data"]}


@pytest.mark.parametrize(
    "path", sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]), ids=lambda p: p.name
)
def test_every_yaml_file_of_the_deployment_parses(path: Path) -> None:
    docs = _docs(path)
    assert docs and all(isinstance(doc, dict) for doc in docs), f"{path} holds no YAML mapping"


def test_no_secret_is_written_anywhere_in_deploy() -> None:
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        found = LITERAL_SECRETS.findall(path.read_text())
        assert not found, f"{path.relative_to(ROOT)} holds what looks like a credential: {found}"
    for path in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]:
        for doc in _docs(path):
            assert doc.get("kind") != "Secret", f"{path.name}: a Secret is built, never written"
            for mapping in _mappings(doc):
                # `NAME: value` (a ConfigMap, a chart's env map) or `{name: NAME, value: ...}`
                literal = {k for k, v in mapping.items() if k in SECRETS and v is not None}
                if mapping.get("name") in SECRETS and "value" in mapping:
                    literal.add(mapping["name"])
                assert not literal, f"{path.name} sets {literal} literally; use the Secret"
    assert _values()["postgresql"]["postgresqlPassword"] == ""
    for line in DOCKERFILE.read_text().splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not SECRETS & set(re.findall(r"[A-Z][A-Z0-9_]+", line)), line


def test_every_secret_setting_reaches_the_pods_from_the_external_secret() -> None:
    provided = _external_secret_keys("acode-dagster-secrets")
    missing = SECRET_SETTINGS - provided.keys()
    assert not missing, f"settings.py marks {sorted(missing)} secret: add to the ExternalSecret"
    for key, ref in provided.items():
        assert ref["key"] and ref["property"] == key, f"{key}: remoteRef {ref}"
    values = _values()
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    for where, refs in (
        ("the code location", _deployment()["envSecrets"]),
        ("the run pods", launcher["config"]["k8sRunLauncher"]["envSecrets"]),
    ):
        assert "acode-dagster-secrets" in _names(refs), f"{where} do not get the secrets"


def test_the_instance_password_comes_from_its_own_external_secret() -> None:
    values = _values()
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["enabled"] is False
    secret = values["global"]["postgresqlSecretName"]
    # The chart reads this key of that Secret into DAGSTER_PG_PASSWORD.
    assert _external_secret_keys(secret)["postgresql-password"]["property"] == (
        "DAGSTER_PG_PASSWORD"
    )


def test_the_instance_storage_the_chart_generates_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    pg = _values()["postgresql"]
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    # As the chart's dagsterYaml.postgresql.config template writes it.
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
        "scheme": pg["postgresqlScheme"],
    }
    result = process_config(PostgresRunStorage.config_type(), {"postgres_db": postgres_db})
    assert result.success, result.errors
    # The same driver as deploy/dagster.yaml, which a test runs against a real PostgreSQL.
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert pg["postgresqlScheme"] == deployed["storage"]["postgres"]["postgres_db"]["scheme"]


def test_the_settings_config_map_holds_valid_non_secret_settings() -> None:
    config_map = _manifest("ConfigMap", "acode-dagster-settings")
    data = config_map["data"]
    unknown = data.keys() - {s.name for s in SETTINGS} - OTHER_SETTINGS
    assert not unknown, f"the ConfigMap sets {sorted(unknown)}, which nothing reads"
    not_text = {k: v for k, v in data.items() if not isinstance(v, str)}
    assert not not_text, f"ConfigMap values must be strings (quote them): {not_text}"
    assert data["ACODE_BRONZE_URL"] == "s3://farmarcas-production-bronze"
    assert data["ACODE_BRONZE_BACKUP_URL"] == "s3://farmarcas-backup-acode"
    settings = Settings.from_env(data)  # raises ConfigError naming a bad value
    assert settings.replicator == data["ACODE_REPLICATOR"]
    for where, refs in (
        ("the code location", _deployment()["envConfigMaps"]),
        ("the run pods", _values()["runLauncher"]["config"]["k8sRunLauncher"]["envConfigMaps"]),
    ):
        assert "acode-dagster-settings" in _names(refs), f"{where} do not get the settings"


def test_the_image_serves_the_projects_code_location() -> None:
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert module == "acode_dagster.definitions"
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*ENTRYPOINT\b", text, re.M), "the chart's args replace CMD only"
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.M)
    command = json.loads(cmd)
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == module
    deployment = _deployment()
    assert deployment["codeServerArgs"] == ["-m", module]
    port = deployment["port"]
    assert command[command.index("-p") + 1] == str(port)
    assert re.search(rf"^EXPOSE {port}$", text, re.M)


def test_the_image_installs_the_locked_dependencies_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M)[-1] == "python:3.11-slim"
    syncs = re.findall(r"^RUN .*\buv sync\b.*$", text, re.M)
    assert syncs and all("--locked" in s and "--extra k8s" in s for s in syncs), syncs
    assert not re.search(r"pip install (?!\"uv==)", text), "dependencies come from uv.lock only"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    security = _deployment()["podSecurityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(users[-1].split(":")[0])


def _chart_instance_config(values: dict[str, Any]) -> dict[str, Any]:
    """The blocks of the instance's dagster.yaml that these values decide, written as the chart's
    templates/configmap-instance.yaml and helpers/instance/_concurrency.tpl write them."""
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"].get("config", {}).get("queuedRunCoordinator") or {}
    coordinator: dict[str, Any] = {
        "module": "dagster.core.run_coordinator",
        "class": daemon["runCoordinator"]["type"],
    }
    if queued.get("maxConcurrentRuns") is not None or queued.get("tagConcurrencyLimits"):
        coordinator["config"] = {
            "max_concurrent_runs": queued.get("maxConcurrentRuns"),
            "tag_concurrency_limits": queued.get("tagConcurrencyLimits"),
        }
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    return {
        "run_coordinator": coordinator,
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "concurrency": {
            "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]},
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            },
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_the_instance_the_chart_generates_queues_runs_and_bounds_the_source(
    tmp_path: Path,
) -> None:
    values = _values()
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] and daemon["runCoordinator"]["enabled"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] is True
    chart = _chart_instance_config(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart))
    dagster_instance_config(str(tmp_path))  # Dagster's own checks; raises naming the problem

    limits = {
        limit["key"]: limit for limit in chart["concurrency"]["runs"]["tag_concurrency_limits"]
    }
    for per_value in ("dagster/partition", "acode/table"):
        assert limits[per_value] == {
            "key": per_value,
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        }
    # The cluster's instance and deploy/dagster.yaml (the same platform on one machine) agree.
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert chart["concurrency"]["pools"] == deployed["concurrency"]["pools"]
    assert (
        chart["concurrency"]["runs"]["max_concurrent_runs"]
        == (deployed["concurrency"]["runs"]["max_concurrent_runs"])
    )
    assert (
        chart["run_monitoring"]["free_slots_after_run_end_seconds"]
        == (deployed["run_monitoring"]["free_slots_after_run_end_seconds"])
    )
    # `acode backfill` reports ACODE_SOURCE_CONCURRENCY; on the cluster the pool's limit holds.
    settings = _manifest("ConfigMap", "acode-dagster-settings")["data"]
    assert (
        int(settings["ACODE_SOURCE_CONCURRENCY"]) == chart["concurrency"]["pools"]["default_limit"]
    )


def test_the_values_use_only_keys_of_the_charts_schema() -> None:
    values = _values()
    daemon = values["dagsterDaemon"]
    sections = {
        "": values,
        "global": values["global"],
        "postgresql": values["postgresql"],
        "dagster-user-deployments": values["dagster-user-deployments"],
        "deployment": _deployment(),
        "runLauncher": values["runLauncher"],
        "k8sRunLauncher": values["runLauncher"]["config"]["k8sRunLauncher"],
        "dagsterDaemon": daemon,
        "runCoordinator": daemon["runCoordinator"],
        "runRetries": daemon["runRetries"],
        "runMonitoring": daemon["runMonitoring"],
        "concurrency": values["concurrency"],
        "pools": values["concurrency"]["pools"],
        "runs": values["concurrency"]["runs"],
        "serviceAccount": values["serviceAccount"],
    }
    for limit in values["concurrency"]["runs"]["tagConcurrencyLimits"]:
        assert set(limit) <= CHART_KEYS["tagConcurrencyLimit"], limit
    for section, mapping in sections.items():
        unknown = set(mapping) - CHART_KEYS[section]
        assert not unknown, f"values.yaml {section or 'top level'}: {unknown} not in the schema"
    user_account = values["dagster-user-deployments"]["serviceAccount"]
    assert set(user_account) <= CHART_KEYS["serviceAccount"], user_account


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_readme_commands_list_every_make_target_and_acode_command() -> None:
    commands = _readme_section("Commands")
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z-]+):.*## ", makefile, re.M)
    missing = [t for t in targets if f"make {t}" not in commands]
    assert not missing, f"README's Commands lack make targets {missing}"
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    missing = [c for c in sub.choices if f"`acode {c}" not in commands]
    assert not missing, f"README's Commands lack acode sub-commands {missing}"


def test_every_acode_command_in_the_readme_parses() -> None:
    # Runnable examples only: syntax summaries ([optional], a|b) are not.
    cited = {
        span
        for span in re.findall(r"`(acode [^`]+)`", README.read_text())
        if not re.search(r"[\[|\\]|\.\.\.", span)
    }
    assert len(cited) >= 5
    for span in sorted(cited):
        try:
            build_parser().parse_args(shlex.split(span)[1:])
        except SystemExit:
            pytest.fail(f"README cites `{span}`, which acode refuses")


# ------------------------------------------------------------------- IAM and RBAC (least privilege)

RBAC = DEPLOY / "k8s" / "rbac.yaml"
TRUST = DEPLOY / "iam" / "acode-dagster-trust.json"
NAMESPACE = "dagster"


def _statements(effect: str) -> list[dict[str, Any]]:
    return [s for s in load_policy()["Statement"] if s["Effect"] == effect]


def _s3_resources(effect: str, action: str) -> set[str]:
    """``bucket/key-pattern`` (or ``bucket``) of every statement of ``effect`` naming ``action``."""
    return {
        r.removeprefix("arn:aws:s3:::")
        for s in _statements(effect)
        if action in s["Action"]
        for r in s["Resource"]
    }


def _configured(name: str) -> tuple[str, str]:
    """(bucket, prefix) of an s3:// setting of the ConfigMap."""
    url = _manifest("ConfigMap", "acode-dagster-settings")["data"][name]
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def test_the_iam_policy_allows_only_actions_the_code_uses() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    allowed = allowed_actions(policy)
    assert sorted(allowed) == sorted(USES), (
        "every action the policy allows must be in support/iam.py USES with the code that needs "
        "it, and every action there must be allowed"
    )
    for action in allowed:
        assert "*" not in action, f"{action}: no wildcard actions"
        for use in USES[action]:
            assert use.needle in (ROOT / use.path).read_text(), (
                f"{action} is justified by {use.needle!r} in {use.path} ({use.why}), which is no "
                "longer there: drop the action from deploy/iam/ or update the use"
            )
    for statement in policy["Statement"]:
        if statement["Action"] == ["cloudwatch:PutMetricData"]:
            # PutMetricData has no resource (AWS's service authorization reference): the role is
            # bounded to the namespace the pods are configured with instead.
            namespace = _manifest("ConfigMap", "acode-dagster-settings")["data"][
                "ACODE_CLOUDWATCH_NAMESPACE"
            ]
            assert statement["Resource"] == ["*"]
            assert statement["Condition"] == {
                "StringEquals": {"cloudwatch:namespace": namespace}
            }, f"{statement['Sid']}: bound to the configured namespace {namespace}"
            continue
        assert "*" not in statement["Resource"], f"{statement['Sid']}: no Resource '*'"
        assert "Condition" not in statement, "conditions cannot be checked by the moto test"
    # Every S3 operation the error messages explain maps to an action the role holds.
    assert {a for actions in S3_ACTIONS.values() for a in actions} <= set(allowed)


def test_the_iam_policy_covers_the_configured_buckets_and_nothing_else() -> None:
    primary, primary_prefix = _configured("ACODE_BRONZE_URL")
    backup, backup_prefix = _configured("ACODE_BRONZE_BACKUP_URL")
    buckets = {primary, backup}
    assert _s3_resources("Allow", "s3:ListBucket") == buckets
    assert _s3_resources("Allow", "s3:ListBucketVersions") == buckets
    s3_keys = {
        r.split("/", 1)[0] for s in _statements("Allow") for r in s["Resource"] if ":s3:::" in r
    }
    assert {k.removeprefix("arn:aws:s3:::") for k in s3_keys} == buckets

    def under(bucket: str, prefix: str, *parts: str) -> str:
        return "/".join(p for p in (bucket, prefix, *parts) if p)

    roots = [(primary, primary_prefix), (backup, backup_prefix)]
    tables = {under(b, p, table_prefix(TABLES[0]).rsplit("/", 1)[0], "*") for b, p in roots}
    probes = {under(b, p, "_probe", "*") for b, p in roots}
    audit = {under(b, p, AUDIT_DIR, "*") for b, p in roots}
    landing = {under(*_configured(n), "*") for n in AIRBYTE_STAGING}
    landing_probes = {under(*_configured(n), PROBE_FOLDER, "*") for n in AIRBYTE_STAGING}
    assert _s3_resources("Allow", "s3:GetObject") == tables | probes | audit | landing | (
        landing_probes
    )
    assert _s3_resources("Allow", "s3:PutObject") == tables | probes | audit | landing_probes
    assert _s3_resources("Allow", "s3:AbortMultipartUpload") == tables
    assert _s3_resources("Allow", "s3:GetObjectVersion") == audit
    assert _s3_resources("Allow", "s3:PutObjectRetention") == audit


def test_deletes_are_allowed_only_where_the_code_deletes_and_denied_on_the_audit_trail() -> None:
    deletable = _s3_resources("Allow", "s3:DeleteObject")
    # Partitions (the swap's marker and stale files), staging, quarantine, leases; probes.
    assert all(
        r.endswith(("/origin=airbyte/database=bronze_acode/*", "/_probe/*")) for r in deletable
    ), deletable
    audit = {r for r in _s3_resources("Allow", "s3:PutObject") if f"/{AUDIT_DIR}/" in r}
    assert audit and not audit & deletable
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"):
        assert _s3_resources("Deny", action) == audit, action


def test_the_iam_policy_names_one_kms_key_and_the_two_mysql_secrets() -> None:
    (kms,) = [s for s in _statements("Allow") if s["Action"][0].startswith("kms:")]
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    (key,) = kms["Resource"]
    assert re.fullmatch(r"arn:aws:kms:[a-z0-9-]+:[A-Z0-9_]+:key/[A-Za-z0-9_-]+", key), key
    (secrets,) = [s for s in _statements("Allow") if s["Action"][0].startswith("secretsmanager:")]
    assert secrets["Action"] == ["secretsmanager:GetSecretValue"]
    names = {r.split(":secret:", 1)[1].removesuffix("-??????") for r in secrets["Resource"]}
    assert len(names) == 2 and all(r.endswith("-??????") for r in secrets["Resource"])
    # A secret id the pods are configured with must be one the role may read.
    data = _manifest("ConfigMap", "acode-dagster-settings")["data"]
    for setting in ("ACODE_MYSQL_PRIMARY_SECRET_ID", "ACODE_MYSQL_BACKUP_SECRET_ID"):
        if data.get(setting):
            assert data[setting] in names, f"{setting}={data[setting]} is not in the IAM policy"


def test_the_rbac_is_namespaced_and_grants_only_what_the_run_launcher_calls() -> None:
    docs = _docs(RBAC)
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding"], "no cluster-wide grant"
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs)
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # dagster-k8s 0.29.27 K8sRunLauncher: create/delete/list jobs, read_namespaced_job_status,
    # list/delete the Job's pods, read_namespaced_pod_log, list_namespaced_event.
    assert granted == {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs", "list"),
        ("batch", "jobs/status", "get"),
        ("", "pods", "delete"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("", "events", "list"),
    }
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    values = _values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": values["serviceAccount"]["name"], "namespace": NAMESPACE}
    ]
    # The chart's own Roles (every verb on jobs and pods) are off, at both levels.
    assert values["rbacEnabled"] is False
    assert values["dagster-user-deployments"]["rbacEnabled"] is False


def test_only_the_code_servers_service_account_holds_the_iam_role() -> None:
    values = _values()
    user = values["dagster-user-deployments"]["serviceAccount"]
    role_arn = user["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::[A-Z0-9_]+:role/acode-dagster", role_arn), role_arn
    assert "eks.amazonaws.com/role-arn" not in (values["serviceAccount"].get("annotations") or {})
    # The role trusts exactly that service account, by the name the chart gives it.
    (statement,) = json.loads(TRUST.read_text())["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]["StringEquals"]
    subjects = [v for k, v in conditions.items() if k.endswith(":sub")]
    assert subjects == [f"system:serviceaccount:{NAMESPACE}:{user['name']}"]
    assert [v for k, v in conditions.items() if k.endswith(":aud")] == ["sts.amazonaws.com"]
    # Nothing binds a Kubernetes Role to it: the code server and run pods call no Kubernetes API.
    bound = [s["name"] for d in _docs(RBAC) if d["kind"] == "RoleBinding" for s in d["subjects"]]
    assert user["name"] not in bound
