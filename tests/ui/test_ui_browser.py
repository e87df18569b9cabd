"""The "Upgrades" page served by a real ``airflow api-server``, opened in headless Chromium.

- ``airflow db migrate`` in a private AIRFLOW_HOME; ``seed_runs.py`` parses the
  DAG folder into the DB and records two runs of the demo policy (one failed and
  rolled back, with a report; one running, with a ``progress`` XCom).
- Two api-servers start side by side from that home: one with SimpleAuthManager's
  all-admins mode (the browser needs no login), one without, where every plugin
  endpoint must refuse an unauthenticated request.
- Chromium dumps the page's DOM (content checks) and screenshots it inside the
  Airflow UI (the nav entry ``/plugin/upgrades``) as ``artifacts/ui-upgrades.png``.
- The demo policy gets a ``driftCheck``; its seeded failed run (cart changed by
  hand) is the page's drift line, whose link opens that run in Airflow's UI.

Skipped when Chromium is missing, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
CHROMIUM = (
    os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
SEED = Path(__file__).with_name("seed_runs.py")
FAILED_RUN_URL = "manual__2026-11-24T09%3A00%3A00%2B00%3A00"
DRIFT_RUN_URL = "scheduled__2026-11-26T08%3A00%3A00%2B00%3A00"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="headless browser test needs Chromium: apt-get install -y chromium",
    ),
]

BAD_POLICY = """\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata:
  name: broken-policy
  colour: red
kubernetes: {namespace: shop, serviceAccount: convoy-rollout, runnerImage: example/convoy:0.1.0}
services:
  - name: cart
    workload: {kind: Deployment, name: cartservice}
    containers: {server: registry.example.com/cart:2.4.0}
    dependsOn: [cartt]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (local http)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"api-server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if _get(f"{base}/api/v2/monitor/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"api-server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each server's own process group (the server and its workers), then wait."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None, "CI is set but Chromium is missing: apt-get install -y chromium"
    with tempfile.TemporaryDirectory(prefix="convoy-chromium-") as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str, str]]:
    """(all-admins base URL, authenticated-only base URL, demo dag id)."""
    home = Path(tempfile.mkdtemp(prefix="convoy-ui-airflow-"))
    policies = home / "policies"
    shutil.copytree(REPO_ROOT / "dags" / "policies", policies)
    (policies / "broken.yaml").write_text(BAD_POLICY, encoding="utf-8")
    # a scheduled drift check, so that the page has a drift line (seed_runs.py: its run)
    with (policies / "demo.yaml").open("a", encoding="utf-8") as demo:
        demo.write('driftCheck:\n  schedule: "@hourly"\n')
    dag_id = yaml.safe_load((policies / "demo.yaml").read_text())["metadata"]["name"]
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__API_AUTH__JWT_SECRET": "convoy-ui-test-" + "x" * 64,
        "CONVOY_POLICIES_DIR": str(policies),
        "CONVOY_REPORTS_DIR": str(home / "reports"),
        "SEED_DAG_ID": dag_id,
        "NO_COLOR": "1",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    procs: list[subprocess.Popen[bytes]] = []
    bases = []
    try:
        for all_admins in ("True", "False"):
            port = _free_port()
            log = home / f"api-server-{all_admins}.log"
            procs.append(
                subprocess.Popen(
                    [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
                    env={**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": all_admins},
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            bases.append((f"http://127.0.0.1:{port}", log))
        seed = subprocess.run(
            [sys.executable, str(SEED)], env=env, capture_output=True, text=True, check=False
        )
        assert seed.returncode == 0, seed.stderr[-3000:]
        for proc, (base, log) in zip(procs, bases, strict=True):
            _wait_healthy(base, proc, log, timeout=60)
        yield bases[0][0], bases[1][0], dag_id
    finally:
        _stop(procs)
        shutil.rmtree(home, ignore_errors=True)


def test_unauthenticated_requests_are_refused(servers: tuple[str, str, str]) -> None:
    _, secured, dag_id = servers
    for path in ("/convoy/", "/convoy/api/upgrades", f"/convoy/reports/{dag_id}/{FAILED_RUN_URL}"):
        status, body = _get(secured + path)
        assert status == 401, (path, status, body[:200])
        assert dag_id not in body
    status, _ = _get(secured + "/convoy/", {"Authorization": "Bearer forged"})
    assert status == 403


def test_plugin_is_registered(servers: tuple[str, str, str]) -> None:
    import json

    admin, _, _ = servers
    status, body = _get(admin + "/api/v2/plugins")
    assert status == 200
    (plugin,) = [p for p in json.loads(body)["plugins"] if p["name"] == "convoy_upgrades"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/convoy"
    assert plugin["external_views"][0]["url_route"] == "upgrades"


def test_page_in_headless_chromium(servers: tuple[str, str, str]) -> None:
    admin, _, dag_id = servers
    dom = _chromium("--dump-dom", admin + "/convoy/")
    assert "<h1>Upgrades</h1>" in dom
    assert dag_id in dom
    # validation state with file:line
    assert "broken.yaml:5:3: metadata.colour: unknown field" in dom
    assert "broken.yaml:11:17: services[0].dependsOn[0]: unknown service" in dom
    # the plan as waves
    for wave in ("Wave 0", "Wave 1", "Wave 2"):
        assert wave in dom
    # the seeded runs, read through Airflow's ORM: states, progress with ETA, report link
    assert "Runs are unavailable" not in dom
    assert "manual__2026-11-25T09:30:00+00:00" in dom
    assert "120000/300000 rows (40.0%)" in dom
    assert "ETA " in dom
    assert "rollback success" in dom
    report_href = f"/convoy/reports/{dag_id}/{FAILED_RUN_URL}"
    assert f'href="{report_href}"' in dom
    status, report = _get(admin + report_href)
    assert status == 200
    assert dag_id in report

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ui-upgrades.png"
    shot.unlink(missing_ok=True)
    # Inside the Airflow UI: the nav entry embeds the page (external view).
    _chromium(
        "--virtual-time-budget=15000",
        f"--screenshot={shot}",
        "--window-size=1400,1000",
        admin + "/plugin/upgrades",
    )
    assert shot.stat().st_size > 20_000


def test_drift_line_in_headless_chromium(servers: tuple[str, str, str]) -> None:
    """The latest drift check: its verdict, what is off (not what is in sync), its run."""
    import html
    import re

    admin, _, dag_id = servers
    dom = _chromium("--dump-dom", admin + "/convoy/")
    lines = re.findall(r'<p class="drift">.*?</p>', dom, flags=re.S)
    assert len(lines) == 1, lines  # the one policy with a driftCheck
    line = html.unescape(lines[0])
    run_href = f"/dags/{dag_id}__drift/runs/{DRIFT_RUN_URL}"
    assert f'<a href="{run_href}" target="_top">' in line
    assert "Drift check:" in line
    assert '<span class="badge s-up_for_retry">drift</span>' in line
    assert '<span class="chip s-up_for_retry" title="up_for_retry">cart</span>' in line
    assert '<span class="chip s-failed" title="failed">checkout</span>' in line
    assert '<span class="chip s-queued" title="queued">orders</span>' in line
    assert ">redis<" not in line  # in sync: not listed
    assert re.search(r'<span class="meta">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</span>', line)
    # the link leads to that run of the drift DAG in Airflow's own UI
    status, body = _get(admin + run_href)
    assert status == 200, body[:300]
    # and the JSON behind the page says the same
    import json

    status, body = _get(admin + "/convoy/api/upgrades")
    assert status == 200
    (demo,) = [p for p in json.loads(body)["policies"] if p["dag_id"] == dag_id]
    assert demo["drift"]["verdict"] == "drift"
    assert demo["drift"]["url"] == run_href
