"""The detector and the enforcement subscriber on a SECURED broker (SASL_SSL, SCRAM-SHA-512, ACLs).

The broker is started by ``deploy/kafka/broker.sh --secure`` (fixture ``secure_broker``) with a
fresh local CA and fresh random passwords; ACLs give the detector user only what it needs and the
subscriber user only read access to the flags topic.

* ``detect`` with the detector's credentials (``DISTILLWATCH_SECURITY_PROTOCOL=SASL_SSL`` ...)
  consumes the requests, creates its internal topics and writes exactly the flags of ``replay``;
  the subscriber then applies them with ``enforce --until-end`` as the subscriber user;
* without credentials, or with a wrong password, ``detect`` exits non-zero quickly with one
  clear line;
* the subscriber user cannot write to the flags topic (authorization error), nor read the
  requests topic;
* no password ever appears in what ``detect`` or ``enforce`` print.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.enforce.store import Store
from tests.eventgen import scenario
from tests.secure_kafka import FLAGS, REQUESTS, SecureBroker

CLI = [sys.executable, "-m", "consumers.cli"]


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLWATCH_")}
    t0 = time.monotonic()
    proc = subprocess.run(CLI + args, env=base | env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


def _no_secrets(broker: SecureBroker, *texts: str) -> None:
    for pw in broker.passwords():
        for t in texts:
            assert pw not in t, "a password appears in the output"


@pytest.fixture(scope="module")
def detected(secure_broker: SecureBroker, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Requests produced as admin, then ``detect --stop-at-end`` as the detector user."""
    ds = scenario(seed=3, n_benign=5, n_org=3, n_hydra=12, days=1)
    values = [orjson.dumps(e) for e in ds.events]
    secure_broker.create_topics([REQUESTS])
    secure_broker.produce("admin", REQUESTS, [(orjson.loads(v)["account_id"].encode(), v) for v in values])
    proc, secs = _run(["detect", "--stop-at-end", "--commit-interval-ms", "200"],
                      secure_broker.client_env("detector"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _no_secrets(secure_broker, proc.stdout, proc.stderr)
    print(f"detect on the secured broker: {len(values)} events in {secs:.1f}s")
    return values


def test_detect_with_credentials_gives_the_replay_flags(secure_broker: SecureBroker, detected: list[bytes]) -> None:
    expected = LocalPipeline(DetectorConfig()).feed(detected)
    assert expected, "the scenario must produce flags"
    got = secure_broker.consume_all("subscriber", FLAGS, "distillwatch-enforce-check")
    assert got == expected


def test_enforce_as_subscriber(secure_broker: SecureBroker, detected: list[bytes], tmp_path: Path) -> None:
    db = tmp_path / "enforce.db"
    env = secure_broker.client_env("subscriber")
    proc, _ = _run(["enforce", "--until-end", "--store", str(db), "--group-id", "distillwatch-enforce-t1"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _no_secrets(secure_broker, proc.stdout, proc.stderr)
    n_flags = len(LocalPipeline(DetectorConfig()).feed(detected))
    with Store(str(db)) as s:
        assert len(s.rows("SELECT * FROM audit")) == n_flags


@pytest.mark.parametrize("how", ["no-credentials", "wrong-password"])
def test_detect_refused_without_credentials(secure_broker: SecureBroker, how: str) -> None:
    env = secure_broker.client_env("detector")
    if how == "no-credentials":  # TLS but no SASL
        env = {"DISTILLWATCH_BOOTSTRAP_SERVERS": secure_broker.bootstrap,
               "DISTILLWATCH_SECURITY_PROTOCOL": "SSL", "DISTILLWATCH_SSL_CA_LOCATION": secure_broker.ca}
    else:
        env["DISTILLWATCH_SASL_PASSWORD"] = "not-the-password-" + os.urandom(6).hex()
    proc, secs = _run(["detect", "--stop-at-end", "--group-id", "distillwatch-detector-refused"], env, timeout=120)
    assert proc.returncode != 0
    assert secs < 60, f"took {secs:.0f}s to give up"
    assert "Kafka error" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    _no_secrets(secure_broker, proc.stdout, proc.stderr)
    if how == "wrong-password":
        assert env["DISTILLWATCH_SASL_PASSWORD"] not in proc.stdout + proc.stderr


def test_subscriber_cannot_write_flags(secure_broker: SecureBroker, detected: list[bytes]) -> None:
    with pytest.raises(KafkaException) as exc:
        secure_broker.produce("subscriber", FLAGS, [(b"acct", b"{}")])
    assert exc.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_subscriber_cannot_read_requests(secure_broker: SecureBroker, detected: list[bytes]) -> None:
    c = Consumer(secure_broker.conf("subscriber", **{"group.id": "distillwatch-enforce-r"}))
    try:
        c.subscribe([REQUESTS])
        deadline = time.monotonic() + 20
        err = None
        while time.monotonic() < deadline and err is None:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is not None, "the subscriber read a request"
                err = m.error()
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        c.close()


def test_detector_cannot_write_elsewhere(secure_broker: SecureBroker, detected: list[bytes]) -> None:
    p = Producer(secure_broker.conf("detector"))
    errs: list[KafkaError] = []
    p.produce(REQUESTS, b"x", on_delivery=lambda e, _m: errs.append(e))
    p.flush(20)
    assert errs and errs[0] is not None and errs[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
