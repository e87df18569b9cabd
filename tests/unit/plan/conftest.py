"""Fixtures of the plan tests."""

from __future__ import annotations

import pytest
from plan_helpers import make_policy, svc

from convoy.policy.models import Policy


@pytest.fixture
def shop() -> Policy:
    """redis, currency -> cart(redis), payment(currency), catalog -> checkout(cart, payment)."""
    return make_policy(
        [
            svc("checkout", "cart", "payment"),
            svc("cart", "redis"),
            svc("payment", "currency"),
            svc("catalog"),
            svc("redis", kind="StatefulSet"),
            svc("currency"),
        ],
        max_parallel=3,
    )
