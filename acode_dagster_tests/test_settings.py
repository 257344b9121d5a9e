"""Settings: read once from the environment, refused clearly, and all of them documented."""

from pathlib import Path

import pytest

from acode_dagster.errors import ConfigError
from acode_dagster.settings import SETTINGS, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_are_the_embedded_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"ACODE_HOME": str(tmp_path)})
    assert settings.replicator == "embedded"
    assert settings.bronze_url == str(tmp_path / "bronze")
    assert settings.stack_home == tmp_path / "stack"
    assert not settings.primary_url_set and not settings.backup_url_set
    assert settings.partitions_start.isoformat() == "2025-01-01"


def test_urls_are_noted_as_set_never_copied() -> None:
    settings = Settings.from_env({"ACODE_MYSQL_PRIMARY_URL": "mysql://u:Hidden-9@h/db"})
    assert settings.primary_url_set
    assert "Hidden-9" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ACODE_REPLICATOR", "airflow"),
        ("ACODE_PARTITIONS_START", "2025-1-1"),
        ("ACODE_MAX_FILE_MB", "0"),
        ("ACODE_MAX_FILE_MB", "big"),
    ],
)
def test_bad_values_name_the_variable_and_the_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}='{value}'"):
        Settings.from_env({variable: value})


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = README.read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"
