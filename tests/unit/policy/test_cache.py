"""The parse cache gives back exactly what a full load gives, and nothing stale."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from convoy.plan import build_plan
from convoy.policy import PolicyError, load_policy
from convoy.policy import cache as cache_module
from convoy.policy import loader as loader_module
from convoy.policy.cache import ParseCache
from convoy.policy.loader import LoadedPolicy

REPO = Path(__file__).resolve().parents[3]
GOOD = sorted((REPO / "tests" / "policies" / "good").glob("*.yaml")) + sorted(
    (REPO / "dags" / "policies").glob("*.yaml")
)


def _open(root: Path, policies: Path) -> ParseCache:
    cache, problem = ParseCache.open(root, policies)
    assert cache is not None, problem
    return cache


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any YAML parse of a policy: a hit must not need one."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the policy was parsed again")

    monkeypatch.setattr(loader_module, "parse_yaml", refuse)


def _same(a: LoadedPolicy, b: LoadedPolicy) -> None:
    assert a.policy == b.policy
    assert a.policy.model_dump() == b.policy.model_dump()
    assert a.warnings == b.warnings
    assert dict(a.migrations) == dict(b.migrations)
    assert a.source_sha256 == b.source_sha256
    assert build_plan(a).digest == build_plan(b).digest


@pytest.mark.parametrize("path", GOOD, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_hit_is_what_a_full_load_returns(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = load_policy(path)
    cache = _open(tmp_path / "cache", path.parent)
    assert load_policy(path, cache=cache).policy == full.policy  # a miss, stored
    assert (cache.hits, cache.misses, cache.stores) == (0, 1, 1)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the policy was parsed again")

    monkeypatch.setattr(loader_module, "parse_yaml", refuse)
    hit = load_policy(path, cache=cache)
    assert cache.hits == 1
    _same(hit, full)


POLICY = """\
apiVersion: convoy/v1
kind: UpgradePolicy
metadata:
  name: cached
startDate: 2026-03-01
kubernetes:
  namespace: default
  runnerImage: registry.example.com/convoy:0.1.0
services:
  - name: web
    workload: {kind: Deployment, name: web}
    containers: {web: nginx:1.27}
datastores:
  - name: orders
    type: postgres
    connId: orders_db
    backup: none
    migrations: migrations
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    (folder / "migrations").mkdir(parents=True)
    (folder / "migrations" / "V1__add.sql").write_text("ALTER TABLE t ADD COLUMN c int;\n")
    (folder / "migrations" / "U1__add.sql").write_text("ALTER TABLE t DROP COLUMN c;\n")
    path = folder / "cached.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def warm(policy: Path, tmp_path: Path) -> ParseCache:
    cache = _open(tmp_path / "cache", policy.parent)
    load_policy(policy, cache=cache)
    assert cache.stores == 1
    return cache


def test_dates_and_migrations_come_back(policy: Path, warm: ParseCache, no_parse: None) -> None:
    hit = load_policy(policy, cache=warm)
    assert warm.hits == 1
    assert hit.policy.start_date == dt.date(2026, 3, 1)
    assert [f.name for f in hit.migrations["orders"]] == ["V1__add", "U1__add"]


def test_a_changed_policy_is_loaded_again(policy: Path, warm: ParseCache) -> None:
    policy.write_text(POLICY.replace("nginx:1.27", "nginx:1.28"))
    loaded = load_policy(policy, cache=warm)
    assert (warm.hits, warm.last_miss) == (0, "policy or code changed")
    assert loaded.policy.services[0].containers["web"] == "nginx:1.28"
    assert load_policy(policy, cache=warm).policy == loaded.policy
    assert warm.hits == 1


@pytest.mark.parametrize("change", ["edit", "add", "remove undo"])
def test_changed_migrations_are_scanned_and_checked_again(
    policy: Path, warm: ParseCache, change: str
) -> None:
    migrations = policy.parent / "migrations"
    if change == "edit":
        (migrations / "V1__add.sql").write_text("ALTER TABLE t ADD COLUMN d int;\n")
    elif change == "add":
        (migrations / "V2__more.sql").write_text("SELECT 1;\n")
        (migrations / "U2__more.sql").write_text("SELECT 1;\n")
    else:
        # Without the undo file the policy is invalid (rollback would have nothing
        # to run): the check must see it, not an old entry.
        (migrations / "U1__add.sql").unlink()
        with pytest.raises(PolicyError, match="no undo"):
            load_policy(policy, cache=warm)
        assert warm.last_miss == "migrations changed"
        return
    loaded = load_policy(policy, cache=warm)
    assert (warm.hits, warm.last_miss) == (0, "migrations changed")
    assert dict(loaded.migrations) == dict(load_policy(policy).migrations)


def test_an_invalid_policy_is_never_stored(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(POLICY.replace("kind: Deployment", "kind: Pod"))
    cache = _open(tmp_path / "cache", tmp_path)
    for _ in range(2):
        with pytest.raises(PolicyError, match="kind"):
            load_policy(path, cache=cache)
    assert (cache.hits, cache.stores) == (0, 0)
    assert not list(cache.directory.glob("*.json"))


def test_a_corrupt_entry_is_a_miss_and_is_replaced(policy: Path, warm: ParseCache) -> None:
    (entry,) = warm.directory.glob("*.json")
    entry.write_text("{not json")
    assert load_policy(policy, cache=warm).policy.metadata.name == "cached"
    assert warm.last_miss == "unreadable entry"
    load_policy(policy, cache=warm)
    assert warm.hits == 1


def test_an_entry_whose_data_no_longer_validates_is_a_miss(policy: Path, warm: ParseCache) -> None:
    (entry,) = warm.directory.glob("*.json")
    stored = json.loads(entry.read_text())
    stored["data"]["services"][0]["workload"]["kind"] = "Pod"
    entry.write_text(json.dumps(stored))
    assert load_policy(policy, cache=warm).policy.services[0].workload.kind == "Deployment"
    assert warm.last_miss == "unreadable entry"


def test_changed_code_is_a_miss(
    policy: Path, warm: ParseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "code_fingerprint", lambda: "another convoy")
    load_policy(policy, cache=warm)
    assert (warm.hits, warm.last_miss) == (0, "policy or code changed")


def test_the_same_file_by_another_path_has_its_own_entry(
    policy: Path, warm: ParseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Diagnostics name the file as it was given; an entry keeps them for that path only.
    monkeypatch.chdir(policy.parent)
    load_policy(Path("cached.yaml"), cache=warm)
    assert warm.hits == 0
    assert len(list(warm.directory.glob("*.json"))) == 2


@pytest.mark.parametrize(
    "data",
    [{"a": b"bytes"}, {1: "int key"}, {"\x00convoy:date": "2026-01-01"}, {"a": {1, 2}}],
    ids=["bytes", "int-key", "tag-key", "set"],
)
def test_data_json_cannot_give_back_is_not_stored(
    policy: Path, tmp_path: Path, data: dict[Any, Any]
) -> None:
    cache = _open(tmp_path / "other", policy.parent)
    loaded = load_policy(policy)
    cache.store(str(policy), data, loaded)
    assert cache.stores == 0
    assert not list(cache.directory.glob("*.json"))


@pytest.mark.parametrize(
    "pasted",
    ["postgresql://app:Pw-4d1f@db.example.com/shop", "https://grafana.example.com/?token=Tk-9a2c"],
)
def test_a_policy_holding_a_credential_is_not_copied_into_the_cache(
    tmp_path: Path, pasted: str
) -> None:
    path = tmp_path / "leaky.yaml"
    described = f"  name: cached\n  description: {pasted}\n"
    path.write_text(POLICY.replace("  name: cached\n", described))
    path.with_name("migrations").mkdir()
    (path.with_name("migrations") / "V1__a.sql").write_text("SELECT 1;\n")
    (path.with_name("migrations") / "U1__a.sql").write_text("SELECT 1;\n")
    cache = _open(tmp_path / "cache", tmp_path)
    for _ in range(2):
        assert load_policy(path, cache=cache).policy.metadata.description == pasted
    assert (cache.hits, cache.stores) == (0, 0)
    assert not list(cache.directory.glob("*.json"))


def test_datetimes_keep_their_type_and_zone() -> None:
    value = {"at": dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC), "on": dt.date(2026, 1, 2)}
    text = json.dumps(cache_module._encode(value))
    assert json.loads(text, object_hook=cache_module._decode_object) == value


def test_a_directory_others_can_write_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    cache, problem = ParseCache.open(root, tmp_path)
    assert cache is None
    assert "other users can write" in problem


def test_a_symlinked_cache_directory_is_not_used(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    cache, problem = ParseCache.open(tmp_path / "link", tmp_path)
    assert cache is None
    assert "not a directory" in problem


def test_entries_are_private_files(policy: Path, warm: ParseCache) -> None:
    (entry,) = warm.directory.glob("*.json")
    assert entry.stat().st_mode & 0o777 == 0o600
    assert warm.directory.stat().st_mode & 0o777 == 0o700


def test_prune_keeps_only_the_listed_policies(policy: Path, warm: ParseCache) -> None:
    other = policy.with_name("other.yaml")
    other.write_text(POLICY.replace("name: cached", "name: other"))
    load_policy(other, cache=warm)
    stale = warm.directory / ".tmp-crashed.json"
    stale.write_text("")
    os.utime(stale, (0, 0))
    assert warm.prune([(str(policy), policy)]) == 2
    assert len(list(warm.directory.glob("*.json"))) == 1
    load_policy(policy, cache=warm)
    assert warm.hits == 1
