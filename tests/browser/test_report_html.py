"""The HTML run report in headless Chromium (Debian's ``chromium``): DOM and a screenshot.

The screenshot is saved as ``artifacts/report.png`` (repo root, gitignored) for
the CI artifacts. Skipped when Chromium is not installed (``apt-get install -y
chromium``; ``CHROMIUM`` overrides the binary).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from convoy.observe.report import DatastoreRow, RunReport, ServiceRow, build_report, write_report
from convoy.validation import ExpectationOutcome, ValidationReport

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
EVIL = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        "chromium",
        "chromium-browser",
    ):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


CHROMIUM = _chromium()
# `make test` installs Chromium where it can (root + apt-get); in CI a missing
# browser is a failure, not a silent skip.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless browser test needs Chromium: apt-get install -y chromium",
)


def _sample() -> RunReport:
    validation = ValidationReport(
        "orders",
        (
            ExpectationOutcome(
                "public.orders",
                "expect_column_values_to_not_be_null",
                {"column": "status"},
                False,
                unexpected_count=30,
                unexpected_examples=(None,),
                element_count=3000,
            ),
            ExpectationOutcome(
                "public.orders",
                "expect_column_values_to_be_in_set",
                {"column": "status", "value_set": ["open", "shipped"]},
                False,
                unexpected_count=7,
                unexpected_examples=("bogus-1", "bogus-2", EVIL),
                on_failure="report-only",
                element_count=3000,
            ),
            ExpectationOutcome(
                "public.users",
                "expect_column_values_to_match_regex",
                {"column": "password_hash", "regex": "^\\$2b\\$"},
                False,
                unexpected_count=4,
                redacted=True,
            ),
            ExpectationOutcome(
                "public.orders",
                "expect_table_row_count_to_be_between",
                {"min_value": 1000},
                True,
                observed_value=3000,
            ),
        ),
        data_docs="/var/lib/convoy/runs/x/data_docs/orders/index.html",
    )
    start = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    return build_report(
        policy_name="shop-2-4",
        digest="sha256:9f2c4e1b7a6d",
        run_id="manual__2026-03-01T09:00:00+00:00",
        triggered_by="alice (Airflow UI)",
        dry_run=False,
        started=start,
        finished=start + dt.timedelta(minutes=6, seconds=12),
        final_state="failed",
        services=[
            ServiceRow(
                "redis",
                {"redis": "redis:7.2-alpine"},
                {"redis": "redis:7.4-alpine"},
                "ready",
                18.2,
                True,
            ),
            ServiceRow(
                "cart",
                {"server": "registry.example.com/cart:2.3.1"},
                {"server": "registry.example.com/cart:2.4.0"},
                "ready",
                41.7,
                True,
            ),
            ServiceRow(EVIL, {"c": "img:1"}, {"c": "img:2"}, "not started", None, False),
        ],
        datastores=[
            DatastoreRow(
                "orders",
                ("V3__add_status", "V4__index_status"),
                ("V4__index_status", "V3__add_status"),
                120_000,
                validation.to_dict(),
                True,
            ),
        ],
        rollback=[
            "data orders: reverted V4__index_status, V3__add_status (undo scripts)",
            "image cart: registry.example.com/cart:2.4.0 -> registry.example.com/cart:2.3.1",
            "image redis: redis:7.4-alpine -> redis:7.2-alpine",
        ],
        timings={
            "preflight": 2.1,
            "rollout.wave-1": 18.9,
            "rollout.wave-2": 42.3,
            "orders.transform": 240.5,
            "orders.validate": 3.2,
            "rollback": 65.0,
        },
    )


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    _, page = write_report(_sample(), tmp_path / "reports")
    url = page.as_uri()

    dom = _run(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'id="final-state">FAILED - rolled back</span>' in html
    assert "registry.example.com/cart:2.4.0" in html
    assert "expect_column_values_to_not_be_null" in html
    assert "(redacted)" in html
    assert "pwned" not in html.split("<title>", 1)[1].split("</title>", 1)[0]  # no script ran
    assert "<script>document" not in html  # the payload stayed text
    assert "&lt;script&gt;" in html
    assert "<img" not in html

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    result = _run([f"--screenshot={shot}", "--window-size=1280,1600", url], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
