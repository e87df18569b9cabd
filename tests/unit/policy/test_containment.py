"""``migrations`` and every file in it stay inside the policy's directory, after symbolic links.

A migration is sent to a production database, so it must be a file reviewed
beside the policy: an absolute path, a ``..`` escape or a link (folder or file)
leading elsewhere is refused, and no message says anything about what lies
outside (no listing, not even whether a path exists there). Links cannot be
committed portably to the corpus, so they are made in temporary directories.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convoy.policy import PolicyError, load_policy, scan_migrations
from convoy.policy.files import MIGRATION_MAX_BYTES

SECRET = "s3cr3t-file-name"


def _policy(migrations: str) -> str:
    return f"""\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata:
  name: contained
kubernetes:
  namespace: shop
  runnerImage: registry.example.com/convoy:0.1.0
services:
  - name: web
    workload: {{kind: Deployment, name: web}}
    containers: {{web: nginx:1.27}}
datastores:
  - name: orders
    type: postgres
    connId: orders_db
    backup: snapshot
    migrations: {migrations}
"""


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``policies/`` with a good ``migrations/orders`` and an ``outside/`` folder beside it."""
    policies = tmp_path / "policies"
    good = policies / "migrations" / "orders"
    good.mkdir(parents=True)
    (good / "V1__init.sql").write_text("CREATE TABLE orders (id int);\n")
    (good / "U1__init.sql").write_text("DROP TABLE orders;\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"V1__{SECRET}.sql").write_text("DROP TABLE users;\n")
    (outside / SECRET).write_text("password=hunter2\n")
    return policies, outside


def _errors(policies: Path, migrations: str) -> list[str]:
    path = policies / "p.yaml"
    path.write_text(_policy(migrations), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    lines = [str(d) for d in info.value.diagnostics if d.severity == "error"]
    text = "\n".join(lines)
    assert SECRET not in text
    assert "hunter2" not in text
    return lines


def _where(policies: Path) -> str:
    return f"{policies / 'p.yaml'}:17:17: datastores[0].migrations: "


def test_contained_migrations_load(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    path = policies / "p.yaml"
    for spelling in ("migrations/orders", "./migrations/../migrations/orders"):
        path.write_text(_policy(spelling), encoding="utf-8")
        loaded = load_policy(path)
        assert [m.name for m in loaded.migrations["orders"]] == ["V1__init", "U1__init"]


def test_absolute_path_is_refused(layout: tuple[Path, Path]) -> None:
    policies, outside = layout
    assert _errors(policies, str(outside)) == [
        _where(policies) + f"'{outside}' is an absolute path; write the directory relative "
        "to the policy file, inside the policy's directory"
    ]


def test_absolute_path_inside_is_refused_too(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    assert "is an absolute path" in _errors(policies, str(policies / "migrations/orders"))[0]


@pytest.mark.parametrize("escape", ["../outside", "migrations/../../outside", "../nope"])
def test_dot_dot_escape_is_refused_without_saying_what_is_there(
    layout: tuple[Path, Path], escape: str
) -> None:
    policies, _ = layout
    # '../nope' does not exist: the message is the same, existence is not revealed.
    assert _errors(policies, escape) == [
        _where(policies) + f"'{escape}' leads out of the policy's directory; migrations "
        "must live in the directory of the policy file or below it"
    ]


def test_symlinked_folder_leaving_the_directory_is_refused(layout: tuple[Path, Path]) -> None:
    policies, outside = layout
    (policies / "linked").symlink_to(outside)
    assert _errors(policies, "linked") == [
        _where(policies) + "'linked' leads out of the policy's directory through a symbolic "
        "link; migrations must live in the directory of the policy file or below it"
    ]


def test_symlinked_parent_folder_leaving_the_directory_is_refused(
    layout: tuple[Path, Path],
) -> None:
    policies, outside = layout
    (outside / "orders").mkdir()
    (policies / "shared").symlink_to(outside)
    assert "through a symbolic link" in _errors(policies, "shared/orders")[0]


def test_symlinked_migration_file_leaving_the_directory_is_refused(
    layout: tuple[Path, Path],
) -> None:
    policies, outside = layout
    target = policies / "migrations" / "orders"
    (target / "V2__steal.sql").symlink_to(outside / SECRET)
    (target / "V3__also.sql").symlink_to("../../../outside/" + SECRET)
    assert _errors(policies, "migrations/orders") == [
        _where(policies) + f"{name}: is a symbolic link that leads out of the policy's "
        "directory; a migration must be a file reviewed beside the policy"
        for name in ("V2__steal.sql", "V3__also.sql")
    ]


def test_links_that_stay_inside_are_followed(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    shared = policies / "shared"
    shared.mkdir()
    (shared / "V2__shared.sql").write_text("SELECT 1;\n")
    (shared / "U2__shared.sql").write_text("SELECT 1;\n")
    orders = policies / "migrations" / "orders"
    (orders / "V2__shared.sql").symlink_to("../../shared/V2__shared.sql")
    (orders / "U2__shared.sql").symlink_to(shared / "U2__shared.sql")
    (policies / "alias").symlink_to("migrations/orders")
    path = policies / "p.yaml"
    path.write_text(_policy("alias"), encoding="utf-8")
    names = [m.name for m in load_policy(path).migrations["orders"]]
    assert names == ["V1__init", "U1__init", "V2__shared", "U2__shared"]


def test_the_policy_directory_is_where_the_policy_file_really_is(tmp_path: Path) -> None:
    # A policy linked from elsewhere in its directory resolves its paths, as at
    # run time, beside the real file.
    real = tmp_path / "policies" / "team"
    (real / "migrations").mkdir(parents=True)
    (real / "migrations" / "V1__init.sql").write_text("SELECT 1;\n")
    (real / "migrations" / "U1__init.sql").write_text("SELECT 1;\n")
    (real / "p.yaml").write_text(_policy("migrations"), encoding="utf-8")
    link = tmp_path / "policies" / "p.yaml"
    link.symlink_to("team/p.yaml")
    assert [m.name for m in load_policy(link).migrations["orders"]] == ["V1__init", "U1__init"]


def test_empty_migrations_path_is_refused(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    assert _errors(policies, "''") == [
        f"{policies / 'p.yaml'}:17:17: datastores[0].migrations: must name a directory of "
        "migration files, relative to the policy file"
    ]


def test_dangling_link_and_directory_among_migrations(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    orders = policies / "migrations" / "orders"
    (orders / "V2__gone.sql").symlink_to("V9__missing.sql")
    (orders / "V3__dir.sql").mkdir()
    assert _errors(policies, "migrations/orders") == [
        _where(policies) + "V2__gone.sql: is a dangling symbolic link",
        _where(policies) + "V3__dir.sql: unexpected directory among migrations",
    ]


def test_oversized_migration_is_refused_unread(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    with (policies / "migrations" / "orders" / "V2__huge.sql").open("wb") as f:
        f.truncate(MIGRATION_MAX_BYTES + 1)  # sparse: nothing is written
    assert _errors(policies, "migrations/orders") == [
        _where(policies) + f"V2__huge.sql: file is too large ({MIGRATION_MAX_BYTES + 1} bytes); "
        "a migration file may have at most 16 MiB (16777216 bytes)"
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_among_migrations_are_refused_and_never_opened(layout: tuple[Path, Path]) -> None:
    policies, _ = layout
    orders = policies / "migrations" / "orders"
    os.mkfifo(orders / "V2__pipe.sql")
    os.mkfifo(orders / "U2__pipe.sql")
    os.mkfifo(orders / "notes")
    (policies / "p.yaml").write_text(_policy("migrations/orders"), encoding="utf-8")
    # In a subprocess: were a FIFO opened for reading, this would hang, not fail.
    result = subprocess.run(
        [str(Path(sys.executable).with_name("convoy")), "validate", str(policies / "p.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    fifo = "is a FIFO (named pipe), not a regular file"
    assert result.stderr.splitlines()[:3] == [
        _where(policies) + f"{name}: {fifo}" for name in ("U2__pipe.sql", "V2__pipe.sql", "notes")
    ]


def test_scan_migrations_with_a_root_refuses_outside_directories(
    layout: tuple[Path, Path],
) -> None:
    policies, outside = layout
    files, problems = scan_migrations(outside, root=policies)
    assert files == ()
    assert [(p.file, p.message) for p in problems] == [
        (str(outside), "migrations directory is outside the policy's directory")
    ]
    files, problems = scan_migrations(policies / "migrations" / "orders", root=policies)
    assert problems == []
    assert [f.name for f in files] == ["V1__init", "U1__init"]
