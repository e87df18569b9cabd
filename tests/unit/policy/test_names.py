from __future__ import annotations

import pytest

from convoy.policy import names

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "ref",
    [
        "nginx:1.27",
        "redis:7.4-alpine",
        "registry.example.com/cart:2.4.0",
        "localhost:5000/team/app:v1",
        "ghcr.io/org/app_name:2024.05.01",
        f"registry.example.com/cart@{DIGEST}",
        f"registry.example.com/cart:2.4.0@{DIGEST}",
    ],
)
def test_valid_image_references(ref: str) -> None:
    assert names.image_reference(ref) is None


@pytest.mark.parametrize(
    ("ref", "severity", "fragment"),
    [
        ("nginx", "error", "has no tag"),
        ("localhost:5000/app", "error", "has no tag"),
        ("nginx:latest", "warning", "moving tag 'latest'"),
        ("Nginx:1", "error", "not a valid image reference"),
        ("nginx:1 ", "error", "not a valid image reference"),
        ("nginx:", "error", "not a valid image reference"),
        ("nginx@sha256:abc", "error", "invalid digest"),
        (f"nginx@{DIGEST.upper()}", "error", "invalid digest"),
        ("", "error", "not a valid image reference"),
    ],
)
def test_image_problems(ref: str, severity: str, fragment: str) -> None:
    problem = names.image_reference(ref)
    assert problem is not None
    assert problem.severity == severity
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("shop-2-4", True),
        ("a", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Shop", False),
        ("-a", False),
        ("a-", False),
        ("a.b", False),
        ("a_b", False),
        ("", False),
    ],
)
def test_dns_label(value: str, ok: bool) -> None:
    assert (names.dns_label(value, "name") is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("web", True),
        ("web.frontend", True),
        ("web..frontend", False),
        ("Web", False),
        ("a" * 254, False),
    ],
)
def test_dns_subdomain(value: str, ok: bool) -> None:
    assert (names.dns_subdomain(value, "name") is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("orders", True),
        ("_x1", True),
        ("Orders", True),
        ("1x", False),
        ("a-b", False),
        ('"a"', False),
        ("a b", False),
        ("a" * 63, True),
        ("a" * 64, False),
    ],
)
def test_identifier(value: str, ok: bool) -> None:
    assert (names.identifier(value, "column") is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("orders", True),
        ("public.orders", True),
        ("a.b.c", False),
        ("public.", False),
        ("public.Or ders", False),
    ],
)
def test_table_name(value: str, ok: bool) -> None:
    assert (names.table_name(value) is None) is ok


@pytest.mark.parametrize(
    ("word", "choices", "hint"),
    [
        ("dependson", ["dependsOn", "name"], " (did you mean 'dependsOn'?)"),
        ("depends_on", ["dependsOn", "name"], " (did you mean 'dependsOn'?)"),
        ("cartt", ["cart", "checkout"], " (did you mean 'cart'?)"),
        ("zzz", ["cart"], ""),
    ],
)
def test_suggest(word: str, choices: list[str], hint: str) -> None:
    assert names.suggest(word, choices) == hint
