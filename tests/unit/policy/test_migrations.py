from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from convoy.policy.migrations import parse_version, scan_migrations


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("1", (1,)),
        ("1.1", (1, 1)),
        ("1.0", (1,)),
        ("1.0.0", (1,)),
        ("0", (0,)),
        ("2024.05.01", (2024, 5, 1)),
        ("10", (10,)),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...]) -> None:
    assert parse_version(text) == version


def test_versions_sort_numerically_not_as_text() -> None:
    assert sorted(["10", "9", "1.10", "1.9"], key=parse_version) == ["1.9", "1.10", "9", "10"]


def test_postgres_scan_orders_links_undo_and_checksums(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "V10__later.sql": "SELECT 10;",
            "V2__add_status.sql": "ALTER TABLE t ADD c int;",
            "U2__add_status.sql": "ALTER TABLE t DROP c;",
            "V1.1__patch.sql": "SELECT 11;",
            ".gitkeep": "",
        },
    )
    files, problems = scan_migrations(tmp_path, "postgres")
    assert problems == []
    assert [(f.name, f.kind, f.has_down) for f in files] == [
        ("V1.1__patch", "V", False),
        ("V2__add_status", "V", True),
        ("U2__add_status", "U", False),
        ("V10__later", "V", False),
    ]
    v2 = files[1]
    assert v2.version == (2,)
    assert v2.version_text == "2"
    assert v2.description == "add_status"
    assert v2.checksum == hashlib.sha256(b"ALTER TABLE t ADD c int;").hexdigest()


def test_mongo_scan_detects_down_without_executing(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    _write(
        tmp_path / "m",
        {
            "V1__a.py": f"open({str(marker)!r}, 'w')\ndef up(db): pass\ndef down(db): pass\n",
            "V2__b.py": "def up(db): pass\ndef helper():\n    def down(db): pass\n",
        },
    )
    (tmp_path / "m" / "__pycache__").mkdir()
    files, problems = scan_migrations(tmp_path / "m", "mongo")
    assert problems == []
    assert [(f.name, f.has_down) for f in files] == [("V1__a", True), ("V2__b", False)]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kind", "files", "messages"),
    [
        (
            "postgres",
            {"V1__a.sql": "", "V1.0__b.sql": ""},
            ["V1__a.sql: duplicate version 1 (same as V1.0__b.sql)"],
        ),
        (
            "postgres",
            {"U4__a.sql": ""},
            ["U4__a.sql: undo for version 4 has no migration V4__*.sql"],
        ),
        (
            "postgres",
            {"V1__.sql": ""},
            [
                "V1__.sql: not a migration file; name it V<version>__<description>.sql "
                "(or U<version>__<description>.sql for its undo)"
            ],
        ),
        (
            "mongo",
            {"V1__a.sql": ""},
            [
                "V1__a.sql: not a migration file; name it V<version>__<description>.py "
                "with up(db) and optional down(db)"
            ],
        ),
        (
            "mongo",
            {"V1__a.py": "def down(db): pass\n"},
            ["V1__a.py: defines no top-level up(db) function"],
        ),
        (
            "mongo",
            {"V1__a.py": "def up(db)\n    pass\n"},
            ["V1__a.py: line 1: invalid Python: expected ':'"],
        ),
    ],
)
def test_scan_problems(
    tmp_path: Path, kind: str, files: dict[str, str], messages: list[str]
) -> None:
    _write(tmp_path, files)
    _, problems = scan_migrations(tmp_path, "mongo" if kind == "mongo" else "postgres")
    assert [f"{Path(p.file).name}: {p.message}" for p in problems] == messages


def test_missing_directory_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    files, problems = scan_migrations(tmp_path / "nope")
    assert files == ()
    assert [p.message for p in problems] == ["migrations directory does not exist"]


def test_syntax_error_points_into_the_migration_file(tmp_path: Path) -> None:
    _write(tmp_path, {"V1__a.py": "def up(db):\n    x = (\n"})
    _, problems = scan_migrations(tmp_path, "mongo")
    assert (problems[0].line, Path(problems[0].file).name) == (2, "V1__a.py")
