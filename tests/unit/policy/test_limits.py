"""Loader limits: alias bombs, node and size budgets, special files, links out of the directory.

Whatever sits in a policies directory, ``convoy validate DIR`` reports every
file, quickly and in bounded memory; nothing here may hang or expand a bomb.
FIFOs, sockets and symbolic links cannot be committed portably to the corpus,
so they are made in temporary directories here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from convoy.policy import PolicyError, declared_name, discover_policies, load_policy
from convoy.policy.files import (
    MIGRATION_MAX_BYTES,
    POLICY_MAX_BYTES,
    FileRefused,
    describe_size,
    read_regular,
)
from convoy.policy.source import ALIAS_BUDGET, DEPTH_BUDGET, NODE_BUDGET, parse_yaml

ANCHORS = 10
REPEAT = 8


def alias_bomb(levels: int = ANCHORS, repeat: int = REPEAT) -> str:
    """``levels`` anchors, each a list repeating the previous one ``repeat`` times."""
    lines = ["apiVersion: convoy/v1", "kind: UpgradePolicy", "metadata:", "  name: bomb"]
    lines.append("l0: &l0 [" + ", ".join(["lol"] * repeat) + "]")
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * repeat) + "]")
    return "\n".join(lines) + "\n"


def _errors(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return [str(d) for d in info.value.diagnostics]


# Runs `convoy validate DIR` and reports the YAML parser events it read, the
# objects it constructed and its peak memory, so that an unbounded expansion
# shows up as a count (or the subprocess timeout), not a frozen suite.
# Linux keeps ru_maxrss across exec (it would report the size of the forking
# pytest), so the peak of this process's own address space, VmHWM, is used there.
_PROBE = textwrap.dedent(
    """
    import io, json, resource, sys, time
    import yaml
    from convoy.cli import main
    counts = {"events": 0, "constructed": 0}
    _parse, _construct = yaml.parse, yaml.constructor.BaseConstructor.construct_object
    def parse(*args, **kwargs):
        for event in _parse(*args, **kwargs):
            counts["events"] += 1
            yield event
    def construct_object(self, node, deep=False):
        counts["constructed"] += 1
        return _construct(self, node, deep)
    yaml.parse = parse
    yaml.constructor.BaseConstructor.construct_object = construct_object
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    code = main(["validate", sys.argv[1]], out, err)
    seconds = time.perf_counter() - start
    try:
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM:"))
        peak_mb = int(hwm.split()[1]) / 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
    print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                      "seconds": seconds, "peak_mb": peak_mb, **counts}))
    """
)


def _validate_in_subprocess(directory: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_alias_bomb_is_refused_without_expansion_and_the_files_after_it_are_reported(
    tmp_path: Path, minimal_text: str
) -> None:
    (tmp_path / "a-bomb.yaml").write_text(alias_bomb(), encoding="utf-8")
    for name in ("b-good", "c-good"):
        (tmp_path / f"{name}.yaml").write_text(
            minimal_text.replace("name: minimal", f"name: {name}"), encoding="utf-8"
        )
    report = _validate_in_subprocess(tmp_path)
    assert report["code"] == 1
    bomb = tmp_path / "a-bomb.yaml"
    assert str(report["err"]).splitlines() == [
        f"{bomb}:9:10: l4[0]: YAML aliases expand to more than {ALIAS_BUDGET} nodes "
        "('*l3' alone repeats 4681, anchored at line 8); refused without expanding them: "
        "write the repeated values out or share fewer, smaller anchors",
        f"{bomb}: invalid (1 error)",
    ]
    assert str(report["out"]).splitlines() == [
        f"{tmp_path / 'b-good.yaml'}: ok (b-good: 1 services, 0 datastores)",
        f"{tmp_path / 'c-good.yaml'}: ok (c-good: 1 services, 0 datastores)",
    ]
    # Refused by counting, not by timing: the parser events read and the objects
    # constructed are those of the texts as written; expanding the bomb's aliases
    # would mean 8**10 nodes.
    good = minimal_text
    texts_events = len(list(yaml.parse(alias_bomb()))) + 2 * len(list(yaml.parse(good)))
    good_nodes = 2 * _nodes(yaml.compose(good))
    assert 0 < int(str(report["events"])) <= 2 * texts_events
    assert 0 < int(str(report["constructed"])) <= 2 * good_nodes
    assert float(str(report["peak_mb"])) < 100


def _nodes(node: yaml.Node) -> int:
    if isinstance(node, yaml.MappingNode):
        return 1 + sum(_nodes(k) + _nodes(v) for k, v in node.value)
    if isinstance(node, yaml.SequenceNode):
        return 1 + sum(_nodes(v) for v in node.value)
    return 1


@pytest.mark.parametrize(
    ("levels", "repeat"),
    [(ANCHORS, REPEAT), (30, 2), (3, 30), (2, 200)],
    ids=["10x8", "30x2", "3x30", "2x200"],
)
def test_alias_bombs_of_any_shape_are_refused(levels: int, repeat: int) -> None:
    doc, problems = parse_yaml(alias_bomb(levels, repeat), "p.yaml")
    assert doc is None
    assert len(problems) == 1
    assert "YAML aliases expand to more than" in problems[0].message


def test_bomb_in_mapping_values_and_merge_keys() -> None:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    for i in range(1, 8):
        merged = ", ".join(f"k{j}: *m{i - 1}" for j in range(6))
        lines.append(f"m{i}: &m{i} {{<<: *m{i - 1}, {merged}}}")
    doc, problems = parse_yaml("\n".join(lines) + "\n", "p.yaml")
    assert doc is None
    assert problems[0].path.startswith("m")
    assert "YAML aliases expand" in problems[0].message


def test_aliases_within_the_budget_still_work() -> None:
    text = "base: &b {kind: Deployment, name: web}\n" + "".join(
        f"s{i}: {{workload: *b, extra: {{<<: *b, name: w{i}}}}}\n" for i in range(200)
    )
    doc, problems = parse_yaml(text, "p.yaml")
    assert problems == []
    assert doc is not None
    assert doc.data["s199"]["extra"] == {"kind": "Deployment", "name": "w199"}


def test_alias_as_a_key_is_counted() -> None:
    text = (
        "k: &k ["
        + ", ".join(["x"] * 999)
        + "]\n"
        + "".join(f"m{i}: {{? *k : 1}}\n" for i in range(11))
    )
    doc, problems = parse_yaml(text, "p.yaml")
    assert doc is None
    assert "YAML aliases expand" in problems[0].message


def test_a_document_with_too_many_nodes_is_refused() -> None:
    text = "tags: [" + ", ".join(["t"] * NODE_BUDGET) + "]\n"
    doc, problems = parse_yaml(text, "p.yaml")
    assert doc is None
    # The mapping, its key and the list come first: item 19997 is node 20001.
    assert [(p.line, p.path) for p in problems] == [(1, f"tags[{NODE_BUDGET - 3}]")]
    assert f"more than {NODE_BUDGET} YAML nodes" in problems[0].message


def test_syntax_errors_keep_their_usual_message_with_aliases() -> None:
    doc, problems = parse_yaml("a: &a [1]\nb: [*a, *a\n", "p.yaml")
    assert doc is None
    assert problems[0].message.startswith("YAML syntax error")


def test_policy_file_size_cap(tmp_path: Path, minimal_text: str) -> None:
    path = tmp_path / "p.yaml"
    padding = "#" * (POLICY_MAX_BYTES - len(minimal_text.encode()))
    path.write_text(minimal_text + padding, encoding="utf-8")
    assert path.stat().st_size == POLICY_MAX_BYTES
    load_policy(path)
    path.write_text(minimal_text + padding + "#", encoding="utf-8")
    assert _errors(path) == [
        f"{path}:1:1: file is too large ({POLICY_MAX_BYTES + 1} bytes); a policy file "
        "may have at most 1 MiB (1048576 bytes)"
    ]


def _validate_dir(directory: Path) -> subprocess.CompletedProcess[str]:
    """`convoy validate DIR` in a subprocess: a file that blocks shows up as a timeout."""
    convoy = Path(sys.executable).with_name("convoy")
    return subprocess.run(
        [str(convoy), "validate", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_and_never_block(tmp_path: Path, minimal_text: str) -> None:
    os.mkfifo(tmp_path / "a-fifo.yaml")
    sock: socket.socket | None = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "b-socket.yaml"))
    except OSError:  # a socket address has a short length limit on some systems
        sock.close()
        sock = None
    (tmp_path / "c-dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    (tmp_path / "z-good.yaml").write_text(minimal_text, encoding="utf-8")
    try:
        result = _validate_dir(tmp_path)
    finally:
        if sock is not None:
            sock.close()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (
        f"{tmp_path / 'a-fifo.yaml'}:1:1: is a FIFO (named pipe), not a regular file; "
        "convoy reads only regular files"
    ) in lines
    if sock is not None:
        assert (
            f"{tmp_path / 'b-socket.yaml'}:1:1: is a socket, not a regular file; "
            "convoy reads only regular files"
        ) in lines
    assert f"{tmp_path / 'c-dangling.yaml'}:1:1: file not found" in lines
    assert result.stdout == f"{tmp_path / 'z-good.yaml'}: ok (minimal: 1 services, 0 datastores)\n"


def test_discover_lists_special_files_so_they_are_reported(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "missing")
    (tmp_path / "_draft.yaml").write_text("x: 1\n")
    (tmp_path / "p.yml").write_text("x: 1\n")
    assert [p.name for p in discover_policies(tmp_path)] == ["dangling.yaml", "p.yml"]


def test_policy_link_leaving_its_directory_is_refused(tmp_path: Path, minimal_text: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("password: hunter2\n", encoding="utf-8")
    policies = tmp_path / "policies"
    policies.mkdir()
    link = policies / "p.yaml"
    link.symlink_to(outside / "secret.yaml")
    errors = _errors(link)
    assert errors == [
        f"{link}:1:1: is a symbolic link to a file outside its directory; convoy reads a "
        "policy only from the directory that lists it (copy or move the file there)"
    ]
    assert "hunter2" not in "\n".join(errors)


def test_policy_links_inside_the_directory_are_followed(tmp_path: Path, minimal_text: str) -> None:
    # Kubernetes ConfigMap volumes and git-sync present files exactly like this.
    data = tmp_path / "..2026_01_01"
    data.mkdir()
    (data / "p.yaml").write_text(minimal_text, encoding="utf-8")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "p.yaml").symlink_to("..data/p.yaml")
    assert load_policy(tmp_path / "p.yaml").policy.metadata.name == "minimal"
    root = tmp_path / "root"
    root.symlink_to(tmp_path)  # a linked policies directory
    assert load_policy(root / "p.yaml").policy.metadata.name == "minimal"


def test_read_regular_refuses_devices_without_reading_them() -> None:
    with pytest.raises(FileRefused, match="is a character device, not a regular file"):
        read_regular(Path("/dev/zero"), 10)


def test_read_regular_stops_at_the_limit_even_when_the_size_lies(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    assert read_regular(path, 11) == b"x" * 11
    with pytest.raises(FileRefused, match=r"file is too large \(11 bytes\)"):
        read_regular(path, 10)


def test_describe_size() -> None:
    assert describe_size(POLICY_MAX_BYTES) == "1 MiB (1048576 bytes)"
    assert describe_size(MIGRATION_MAX_BYTES) == "16 MiB (16777216 bytes)"
    assert describe_size(1000) == "1000 bytes"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_declared_name_never_blocks_or_expands(tmp_path: Path, minimal_text: str) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    assert declared_name(tmp_path / "fifo.yaml") is None
    (tmp_path / "bomb.yaml").write_text(alias_bomb(), encoding="utf-8")
    assert declared_name(tmp_path / "bomb.yaml") is None
    (tmp_path / "bad.yaml").write_text(minimal_text + "rollout: {maxParallel: 0}\n")
    assert declared_name(tmp_path / "bad.yaml") == "minimal"


def test_deep_nesting_is_refused_before_the_walk() -> None:
    # Every node keeps its path from the root: depth times width would be quadratic.
    doc, problems = parse_yaml("a: " + "[" * DEPTH_BUDGET + "]" * DEPTH_BUDGET + "\n", "p.yaml")
    assert doc is None
    assert [(p.line, p.column) for p in problems] == [(1, 4 + DEPTH_BUDGET - 1)]
    assert f"more than {DEPTH_BUDGET} levels deep" in problems[0].message
    ok = "a: " + "[" * (DEPTH_BUDGET - 1) + "]" * (DEPTH_BUDGET - 1) + "\n"
    assert parse_yaml(ok, "p.yaml")[1] == []
