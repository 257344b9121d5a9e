"""What a person sees: the real Dagster UI in a real (headless) Chromium, after one partition of
the three bronze assets has been materialized through the real webserver and daemon.

Uses Debian's Chromium at /usr/bin/chromium; nothing here downloads a browser. Screenshots go
to ``test-artifacts/`` at the repository root (gitignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from acode_dagster.defs.bronze.checks import GROUP, bronze_key
from acode_dagster.quality import NULL_SHARE, PARTITION_CHECKS
from acode_dagster.tables import FISCAL_LINES, TABLES
from acode_dagster_tests.support.webserver import DagsterUI
from acode_dagster_tests.ui.conftest import BACKFILL_DAYS, RUN_DAY, LaunchedRun

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 60_000  # two cores shared with the webserver, the daemon and its runs


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the UI tests drive Debian's Chromium and never download a "
            "browser; install it with `apt-get install chromium`"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(browser: Browser) -> Iterator[Page]:
    """One tab for the module, so the UI's scripts are fetched and compiled once."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def settled(materialized_run: LaunchedRun, finished_backfill: dict[str, Any]) -> LaunchedRun:
    """Once nothing runs any more: the partition run and the backfill launched alongside it
    both ended (so the page shows a state that does not change under the assertions)."""
    assert materialized_run.status == "SUCCESS", materialized_run.errors
    assert finished_backfill["status"] == "COMPLETED_SUCCESS", finished_backfill
    return materialized_run


@contextmanager
def screenshot_after(page: Page, name: str) -> Iterator[None]:
    """Save a full-page screenshot once the block is done, also when an assertion failed (then
    it shows what the page showed instead)."""
    try:
        yield
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_asset_graph_shows_the_three_bronze_assets_and_their_checks(
    dagster_webserver: DagsterUI, settled: LaunchedRun, page: Page
) -> None:
    ui = dagster_webserver
    page.goto(f"{ui.base_url}/locations/{ui.location_name}/asset-groups/{GROUP}")
    with screenshot_after(page, "asset_graph.png"):
        for table in TABLES:
            # Long names are shortened in the node; the full name is its tooltip.
            expect(page.locator(f'[data-tooltip="{table.name}"]')).to_be_visible()
        # Each node sums up its checks: the five partition checks and the mirror of the run passed.
        expect(page.get_by_text(re.compile(r"^[67] / 7 Passed$"))).to_have_count(len(TABLES))
        expect(page.get_by_text("Latest event")).to_have_count(len(TABLES))


def test_an_asset_page_shows_its_partition_checks_passed(
    dagster_webserver: DagsterUI, settled: LaunchedRun, page: Page
) -> None:
    ui = dagster_webserver
    path = "/".join(bronze_key(FISCAL_LINES).path)
    page.goto(f"{ui.base_url}/assets/{path}?view=checks&checkDetail={NULL_SHARE}")
    with screenshot_after(page, "asset_checks.png"):
        for spec in PARTITION_CHECKS:
            row = page.locator('[class*="checkRow"]').filter(
                has=page.get_by_title(spec.name, exact=True)
            )
            expect(row).to_contain_text(re.compile("succeeded", re.IGNORECASE))
        # The selected check's latest execution passed, on one of the days materialized here
        # (the run's, or a day of the backfill running alongside).
        expect(page.get_by_text("Evaluation result")).to_be_visible()
        expect(page.get_by_text("Passed", exact=True)).to_be_visible()
        days = "|".join(day.isoformat() for day in (RUN_DAY, *BACKFILL_DAYS))
        expect(page.get_by_text(re.compile(f"^({days})$"))).to_be_visible()
