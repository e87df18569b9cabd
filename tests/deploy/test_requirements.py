"""requirements.txt, constraints.txt and the Dockerfile tell one story.

constraints.txt is the single source of truth (the full pinned environment,
Airflow constraints-file style); requirements.txt is its top-level runtime
subset, and every pin there must equal the constraint. The image installs
both, on the Airflow base image of the pinned version.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _requirements(path: Path) -> list[Requirement]:
    reqs = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for req in _requirements(path):
        specs = list(req.specifier)
        assert len(specs) == 1, f"{path.name}: {req} is not an exact pin"
        assert specs[0].operator == "==", f"{path.name}: {req} is not an exact pin"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


REQUIREMENTS = _requirements(REPO / "requirements.txt")
CONSTRAINTS = _pins(REPO / "constraints.txt")
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined, comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    return out


INSTRUCTIONS = _instructions(DOCKERFILE)


def test_constraints_pin_every_line_exactly() -> None:
    assert CONSTRAINTS, "constraints.txt has no pins"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: str(r.name))
def test_requirement_pin_equals_constraint(req: Requirement) -> None:
    name = canonicalize_name(req.name)
    assert name in CONSTRAINTS, f"{req.name} is in requirements.txt but not in constraints.txt"
    specs = list(req.specifier)
    assert [s.operator for s in specs] == ["=="], f"{req} must be an exact pin (==)"
    assert specs[0].version == CONSTRAINTS[name], (
        f"{req.name}: requirements.txt pins {specs[0].version}, "
        f"constraints.txt pins {CONSTRAINTS[name]}; regenerate with `make constraints`"
    )
    for extra in req.extras:
        # psycopg[binary] pulls psycopg-binary: it must be pinned at the same version.
        companion = canonicalize_name(f"{req.name}-{extra}")
        if companion in CONSTRAINTS:
            assert CONSTRAINTS[companion] == specs[0].version


def test_requirements_are_unique() -> None:
    names = [canonicalize_name(r.name) for r in REQUIREMENTS]
    assert len(names) == len(set(names))


def test_dockerfile_installs_requirements_with_constraints() -> None:
    assert re.search(r"COPY\b[^\n]*\brequirements\.txt\b[^\n]*\bconstraints\.txt", DOCKERFILE)
    installs = [i for i in INSTRUCTIONS if i.startswith("RUN") and "pip install" in i]
    assert len(installs) == 1, installs
    command = installs[0]
    assert re.search(r"(--constraint|-c)\s+\S*constraints\.txt", command)
    assert re.search(r"(--requirement|-r)\s+\S*requirements\.txt", command)
    assert "--no-cache-dir" in command


def test_base_image_matches_pinned_airflow() -> None:
    airflow = CONSTRAINTS["apache-airflow"]
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert bases, "no FROM line"
    for base in bases:
        assert base == f"apache/airflow:{airflow}-python3.11", base
    assert f"ARG AIRFLOW_VERSION={airflow}" in DOCKERFILE


def test_image_runs_as_the_official_airflow_uid() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert users, "the Dockerfile must set USER explicitly"
    assert users[-1] == "50000"


def test_image_labels_carry_the_version() -> None:
    assert 'org.opencontainers.image.version="${CONVOY_VERSION}"' in DOCKERFILE
    project = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    assert version
    assert f"ARG CONVOY_VERSION={version.group(1)}" in DOCKERFILE
