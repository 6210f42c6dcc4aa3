"""Fixtures of the integration tests that need more than the plain local broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.secure_kafka import SecureBroker, start_secure_broker


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureBroker]:
    """A secured broker of the session's own (deploy/kafka/broker.sh --secure), stopped at the end."""
    try:
        broker = start_secure_broker()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield broker
    broker.stop()
