"""The Kafka layer's client configurations (``consumers/kafka/clients.py``) and deployment names
(``consumers/kafka/naming.py``), no broker: the runner itself is tested in test_stage_runner.py."""

from __future__ import annotations

from pydantic import SecretStr

from consumers.config import KafkaSettings
from consumers.kafka.clients import RunnerOptions, consumer_config, producer_config, reader_config
from consumers.kafka.naming import changelog_topic, pipeline_topics, stage_group, transactional_id
from tests.integration.toy_stage import SPEC


def test_consumer_config_is_eos_ready() -> None:
    conf = consumer_config(KafkaSettings(), SPEC.name, RunnerOptions(group_id="g"))
    assert conf["group.id"] == "g"
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_committed"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["enable.partition.eof"] is True
    assert conf["auto.offset.reset"] == "earliest"
    assert "group.instance.id" not in conf


def test_static_membership_and_overrides() -> None:
    opts = RunnerOptions(
        group_id="g",
        instance_id="pod-3",
        static_membership=True,
        consumer_overrides={"fetch.min.bytes": 1024},
    )
    conf = consumer_config(KafkaSettings(), SPEC.name, opts)
    assert conf["group.instance.id"] == "toy.pod-3"
    assert conf["fetch.min.bytes"] == 1024


def test_producer_config_is_transactional() -> None:
    opts = RunnerOptions(group_id="g", instance_id="pod-3", transaction_timeout_ms=30000)
    conf = producer_config(KafkaSettings(), SPEC.name, opts)
    assert conf["transactional.id"] == "g.toy.pod-3"
    assert conf["enable.idempotence"] is True
    assert conf["transaction.timeout.ms"] == 30000
    assert conf["partitioner"] == "murmur2_random"
    assert conf["compression.type"] == "lz4"


def test_secret_reaches_librdkafka_but_not_reprs() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("hunter2"),
    )
    conf = producer_config(kafka, SPEC.name, RunnerOptions(group_id="g"))
    assert conf["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(kafka)


def test_reader_config_never_commits_and_reads_committed() -> None:
    conf = reader_config(KafkaSettings(), extra={"fetch.wait.max.ms": 50})
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["group.id"].startswith("distillwatch-reader-")
    assert conf["fetch.wait.max.ms"] == 50
    assert reader_config(KafkaSettings(), "g", isolation="read_uncommitted")["group.id"] == "g"


def test_deployment_names_are_built_in_one_place() -> None:
    kafka = KafkaSettings(internal_prefix="dw.", group_id="live")
    assert stage_group("live", "account") == "live.account"
    assert changelog_topic(kafka, "live", "account") == "dw.live.account.changelog"
    assert transactional_id("live.account", "account", "pod-1") == "live.account.account.pod-1"
    topics = pipeline_topics(kafka)
    assert topics["observations"] == "dw.live.observations"
    assert topics["verdicts"] == "dw.live.verdicts"
    assert topics["requests"] == kafka.requests_topic
