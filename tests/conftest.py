"""Shared pytest fixtures and hooks.

* ``kafka_bootstrap`` (session): the bootstrap address of a real broker. Uses
  ``$DISTILLWATCH_TEST_BOOTSTRAP`` when set; otherwise runs ``deploy/kafka/broker.sh start``
  (idempotent: reuses a broker already answering on 127.0.0.1:9092, or ``$KAFKA_PORT``). A
  broker that cannot be started FAILS the test, never skips it.
* ``topic_prefix`` (function): a unique topic-name prefix per test, e.g.
  ``t-test_commit-1a2b3c4d.``, so tests never share topics.
* Every test under ``tests/integration/`` is marked ``integration`` automatically.

Topic and consume helpers live in ``tests/kafka_helpers.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "broker.sh"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
# The port broker.sh uses; KAFKA_PORT overrides it for both (e.g. to test beside another broker).
TEST_BROKER_PORT = int(os.environ.get("KAFKA_PORT", "9092"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from ``tests/integration/`` as ``integration``."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def _check_answers(bootstrap: str, timeout: float = 10.0) -> str | None:
    """None when a broker answers a metadata request on ``bootstrap``, else the reason."""
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the test
        return f"{type(exc).__name__}: {exc}"
    return None if md.brokers else "metadata has no brokers"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a running Kafka broker (starting the local one if needed)."""
    external = os.environ.get("DISTILLWATCH_TEST_BOOTSTRAP")
    if external:
        problem = _check_answers(external, timeout=30.0)
        if problem:
            pytest.fail(f"DISTILLWATCH_TEST_BOOTSTRAP={external} does not answer: {problem}")
        return external

    env = dict(os.environ, KAFKA_PORT=str(TEST_BROKER_PORT))
    try:
        proc = subprocess.run(
            ["bash", str(BROKER_SCRIPT), "start"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired as exc:
        out = [
            x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
            for x in (exc.stdout, exc.stderr)
        ]
        pytest.fail(f"{BROKER_SCRIPT} start did not finish in 600 s:\n{out[0]}\n{out[1]}")
    if proc.returncode != 0:
        pytest.fail(
            f"could not start the local Kafka broker ({BROKER_SCRIPT} start exited "
            f"{proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    bootstrap = f"127.0.0.1:{TEST_BROKER_PORT}"
    problem = _check_answers(bootstrap, timeout=30.0)
    if problem:
        pytest.fail(f"broker.sh start succeeded but {bootstrap} does not answer: {problem}")
    return bootstrap


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic-name prefix unique to this test run: ``t-<testname>-<uuid8>.``."""
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", request.node.name).strip("_")[:60]
    return f"t-{name}-{uuid.uuid4().hex[:8]}."
