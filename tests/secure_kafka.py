"""A throw-away SECURED Kafka broker for integration tests (``deploy/kafka/broker.sh --secure``).

:func:`start_secure_broker` starts a broker on two free ports with its own data and run
directories under a temporary directory: SASL_SSL (SCRAM-SHA-512) with a freshly generated local
CA and freshly generated passwords (per run, read from the broker's ``credentials.env``, never
printed), StandardAuthorizer ACLs for the detector and subscriber users. :class:`SecureBroker`
gives librdkafka configs and ``DISTILLWATCH_*`` environments per user, and ``stop()``.

Topic names: the ACLs are per name, so the tests use the default topic names (the broker is
their own, nobody else uses it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO / "deploy" / "kafka" / "broker.sh"

REQUESTS = "llm.requests"
FLAGS = "distillation.flags"
DLQ = "llm.requests.dlq"
DETECTOR_GROUP = "distillwatch-detector"
SUBSCRIBER_GROUP = "distillwatch-enforce"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SecureBroker:
    bootstrap: str
    ca: str
    users: dict[str, tuple[str, str]]  # role (admin/detector/subscriber) -> (user, password)
    env: dict[str, str] = field(repr=False)
    tmp: Path = field(repr=False)

    def passwords(self) -> list[str]:
        return [p for _u, p in self.users.values()]

    def conf(self, role: str | None, **extra: Any) -> dict[str, Any]:
        """librdkafka config of ``role``; ``None``: TLS without SASL credentials."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "ssl.ca.location": self.ca}
        if role is None:
            conf["security.protocol"] = "SSL"
        else:
            user, password = self.users[role]
            conf.update({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.username": user, "sasl.password": password})
        conf.update(extra)
        return conf

    def client_env(self, role: str) -> dict[str, str]:
        """``DISTILLWATCH_*`` variables that make a distillwatch command connect as ``role``."""
        user, password = self.users[role]
        return {
            "DISTILLWATCH_BOOTSTRAP_SERVERS": self.bootstrap,
            "DISTILLWATCH_SECURITY_PROTOCOL": "SASL_SSL",
            "DISTILLWATCH_SASL_MECHANISM": "SCRAM-SHA-512",
            "DISTILLWATCH_SASL_USERNAME": user,
            "DISTILLWATCH_SASL_PASSWORD": password,
            "DISTILLWATCH_SSL_CA_LOCATION": self.ca,
        }

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        admin = AdminClient(self.conf("admin"))
        futs = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1)
                                    for n in names], operation_timeout=30)
        for fut in futs.values():
            fut.result(timeout=30)

    def produce(self, role: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]],
                transactional: bool = False) -> None:
        extra: dict[str, Any] = {"linger.ms": 5}
        if transactional:
            extra["transactional.id"] = f"test-{uuid.uuid4().hex[:8]}"
        p = Producer(self.conf(role, **extra))
        if transactional:
            p.init_transactions(30)
            p.begin_transaction()
        errors: list[Any] = []
        for key, value in messages:
            p.produce(topic, value=value, key=key,
                      on_delivery=lambda err, _m: errors.append(err) if err else None)
            p.poll(0)
        if transactional:
            p.commit_transaction(30)
        left = p.flush(30)
        if left or errors:
            p.purge()
            p.flush(0)
            raise KafkaException(errors[0] if errors else f"{left} messages not delivered")

    def consume_all(self, role: str, topic: str, group: str, timeout: float = 30.0) -> list[bytes]:
        """Every committed value of ``topic``, read from the beginning up to its end (EOF)."""
        import time

        c = Consumer(self.conf(role, **{"group.id": group, "enable.auto.commit": False,
                                         "isolation.level": "read_committed",
                                         "enable.partition.eof": True}))
        try:
            md = c.list_topics(topic, timeout=timeout)
            parts = sorted(md.topics[topic].partitions)
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            out: list[bytes] = []
            at_end: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(at_end) < len(parts):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic}: end not reached in {timeout}s")
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise KafkaException(m.error())
                at_end.discard(m.partition())
                out.append(m.value())
            return out
        finally:
            c.close()

    def stop(self) -> None:
        subprocess.run(["bash", str(BROKER_SCRIPT), "stop"], env=self.env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_secure_broker() -> SecureBroker:
    """Start a secured broker of its own (free ports, temporary dirs); raises when it cannot."""
    tmp = Path(tempfile.mkdtemp(prefix="distillwatch-secure-"))
    env = dict(os.environ, KAFKA_SECURE="1", KAFKA_PORT=str(free_port()),
               KAFKA_CONTROLLER_PORT=str(free_port()), KAFKA_DATA_DIR=str(tmp / "data"),
               KAFKA_RUN_DIR=str(tmp / "run"))
    proc = subprocess.run(["bash", str(BROKER_SCRIPT), "start"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        subprocess.run(["bash", str(BROKER_SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"broker.sh start --secure exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    secrets = tmp / "run" / "secrets"
    creds: dict[str, str] = {}
    for line in (secrets / "credentials.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            creds[k] = v
    users = {role: (creds[f"KAFKA_{role.upper()}_USER"], creds[f"KAFKA_{role.upper()}_PASSWORD"])
             for role in ("admin", "detector", "subscriber")}
    broker = SecureBroker(f"127.0.0.1:{env['KAFKA_PORT']}", str(secrets / "ca.pem"), users, env, tmp)
    for pw in broker.passwords():
        assert pw not in proc.stdout and pw not in proc.stderr, "broker.sh printed a password"
    return broker
