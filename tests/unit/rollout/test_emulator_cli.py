"""``python -m convoy.emulator serve``: bad arguments are one line and exit 2, never a server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convoy.emulator import EmulatedCluster
from convoy.emulator import __main__ as cli

ERROR_PREFIX = "python -m convoy.emulator serve: error: "
SERVE = [sys.executable, "-m", "convoy.emulator", "serve"]
PORT_RANGE = "argument --port: port must be 0-65535 (0: any free port), not"


@pytest.fixture(autouse=True)
def _keep_pytest_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() installs SIGTERM/SIGINT handlers; the test process keeps its own."""
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no URL: nothing was served
    assert "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith(ERROR_PREFIX), captured.err
    return last.removeprefix(ERROR_PREFIX)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "65536"], f"{PORT_RANGE} 65536"),
        (["--port", "-1"], f"{PORT_RANGE} -1"),
        (["--port", "http"], "argument --port: not a port number: 'http'"),
        (["--host", ""], "argument --host: not a host name or address: ''"),
        (["--host", "local host"], "argument --host: not a host name or address: 'local host'"),
        (["--tick-seconds", "-0.5"], "argument --tick-seconds: must be more than 0 and at most"),
        (["--tick-seconds", "0"], "argument --tick-seconds: must be more than 0 and at most"),
        (["--tick-seconds", "nan"], "argument --tick-seconds: must be more than 0 and at most"),
        (["--tick-seconds", "inf"], "argument --tick-seconds: must be more than 0 and at most"),
        (["--tick-seconds", "1e12"], "argument --tick-seconds: must be more than 0 and at most"),
        (["--tick-seconds", "soon"], "argument --tick-seconds: not a number of seconds: 'soon'"),
    ],
)
def test_bad_argument_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    line = _usage_error(capsys, ["serve", "--kubeconfig", str(kubeconfig), *args])
    assert line.startswith(message)
    assert not kubeconfig.exists()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("no-such-host.invalid", "cannot listen on no-such-host.invalid:0: "),
        ("192.0.2.1", "cannot listen on 192.0.2.1:0: Cannot assign requested address"),
    ],
)
def test_host_it_cannot_listen_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, host: str, reason: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    line = _usage_error(capsys, ["serve", "--kubeconfig", str(kubeconfig), "--host", host])
    assert line.startswith(reason)
    assert not kubeconfig.exists()


def test_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path, busy_port: int) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    argv = ["serve", "--kubeconfig", str(kubeconfig), "--port", str(busy_port)]
    line = _usage_error(capsys, argv)
    assert line == f"cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    assert not kubeconfig.exists()


def test_unwritable_kubeconfig_stops_the_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "kubeconfig"
    line = _usage_error(capsys, ["serve", "--kubeconfig", str(target)])
    assert line == f"argument --kubeconfig: cannot write {target}: No such file or directory"


def test_invalid_policy_prints_its_diagnostics(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: convoy/v1\nkind: UpgradePolicy\nmetadata: {name: Bad_Name}\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--kubeconfig", str(tmp_path / "kc"), "--policy", str(policy)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1] == f"{ERROR_PREFIX}argument --policy: {policy} is not a valid policy"
    assert any(line.startswith(f"{policy}:3:") for line in lines), err


def test_missing_policy_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    line = _usage_error(
        capsys, ["serve", "--kubeconfig", str(tmp_path / "kc"), "--policy", str(missing)]
    )
    assert line == f"argument --policy: {missing} is not a valid policy"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_server_stops_when_its_controller_dies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convoy.emulator import cluster as cluster_module

    def broken_clock() -> float:
        raise RuntimeError("clock broke")

    monkeypatch.setattr(cluster_module, "clock", broken_clock)
    assert cli.main(["serve", "--kubeconfig", str(tmp_path / "kc")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("http://127.0.0.1:")
    assert captured.err.strip().splitlines()[-1] == (
        "python -m convoy.emulator: the simulated controller stopped (RuntimeError: clock broke)"
    )


def test_cluster_refuses_a_tick_the_controller_cannot_sleep() -> None:
    for tick in (0.0, -1.0, float("nan"), float("inf"), 1e12):
        with pytest.raises(ValueError, match="tick_seconds must be in"):
            EmulatedCluster(tick)


def test_cluster_reports_a_dead_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    from convoy.emulator import cluster as cluster_module

    with EmulatedCluster(0.01) as cluster:
        assert cluster.controller_alive
    assert not cluster.controller_alive  # stopped on purpose: no error recorded
    assert cluster.controller_error is None

    def broken_clock() -> float:
        raise RuntimeError("clock broke")

    monkeypatch.setattr(cluster_module, "clock", broken_clock)
    monkeypatch.setattr("threading.excepthook", lambda args: None)
    with EmulatedCluster(0.01) as cluster:
        cluster._threads[1].join(timeout=5)
        assert not cluster.controller_alive
        assert isinstance(cluster.controller_error, RuntimeError)


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    """Through ``python -m``: exit 2 and one error line, as argparse does."""
    proc = subprocess.run(
        [*SERVE, "--kubeconfig", str(tmp_path / "kc"), "--port", "70000", "--tick-seconds", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"{ERROR_PREFIX}argument --port: ")


def test_real_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [*SERVE, "--kubeconfig", str(tmp_path / "kc"), "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        out: Any = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert ready.read_text().strip() == url
