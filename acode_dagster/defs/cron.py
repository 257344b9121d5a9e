"""The cron settings of the schedules, checked the way Dagster will check them."""

from dagster._utils.schedules import is_valid_cron_string

from acode_dagster.errors import ConfigError


def schedule_cron(setting: str, cron: str, example: str) -> str:
    """``cron`` (the value of ``setting``) when Dagster accepts it as a schedule; settings only
    checks its shape, so a value such as ``61 5 * * *`` is refused here, by name, when the
    definitions load, rather than by Dagster with no word of the setting."""
    if not is_valid_cron_string(cron):
        raise ConfigError(
            f"{setting}={cron!r} is not a cron schedule Dagster accepts; use five fields "
            f"(minute hour day month weekday, São Paulo time), e.g. {example!r}"
        )
    return cron
