"""The simulator against a real broker: ``produce_events`` and ``distillwatch simulate --topic``
write every event, keyed by account id, and they read back intact."""

from __future__ import annotations

import argparse
import collections

import pytest

from consumers.config import KafkaSettings
from consumers.contract.events import parse_event
from consumers.sim import Simulation, produce_events, read_jsonl
from consumers.sim import cli as sim_cli
from tests.kafka_helpers import consume_all, create_topics

pytestmark = pytest.mark.integration


def test_smoke_produced_to_topic_reads_back_keyed_by_account(kafka_bootstrap, topic_prefix):
    topic = create_topics(kafka_bootstrap, [(f"{topic_prefix}llm.requests", 3)])[0]
    sim = Simulation("smoke", 21)
    n = produce_events(sim.events(), topic, KafkaSettings(bootstrap_servers=kafka_bootstrap))
    expected = list(sim.events())
    assert n == len(expected) > 30_000

    records = consume_all(kafka_bootstrap, topic, timeout=180)
    assert len(records) == n
    accounts = {lab["account_id"] for lab in sim.labels}
    got_ids = collections.Counter()
    partition_of: dict[bytes, int] = {}
    last_ts: dict[bytes, int] = {}
    for rec in records:  # (partition, offset) order
        ev = parse_event(rec.value)
        assert rec.key == ev["account_id"].encode("utf-8")
        assert ev["account_id"] in accounts
        assert partition_of.setdefault(rec.key, rec.partition) == rec.partition
        assert ev["ts_ms"] >= last_ts.get(rec.key, 0)  # per-account order survives
        last_ts[rec.key] = ev["ts_ms"]
        got_ids[ev["event_id"]] += 1
    assert got_ids == collections.Counter(e["event_id"] for e in expected)


def test_simulate_cli_to_topic(kafka_bootstrap, topic_prefix, tmp_path):
    # message timestamps = event times (April 2026): keep them from time-based retention
    topic = create_topics(
        kafka_bootstrap, [{"name": f"{topic_prefix}cli", "config": {"retention.ms": "-1"}}]
    )[0]
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    labels = tmp_path / "labels.jsonl"
    args = parser.parse_args([
        "--scenario", "smoke", "--seed", "4", "--scale", "0.2", "--max-events", "5000",
        "--topic", topic, "--labels", str(labels), "--bootstrap-servers", kafka_bootstrap,
        "--event-timestamps",
    ])
    assert sim_cli.run(args) == 0
    records = consume_all(kafka_bootstrap, topic, timeout=120)
    assert len(records) == 5000
    known = {lab["account_id"] for lab in read_jsonl(labels)}
    assert {parse_event(r.value)["account_id"] for r in records} <= known
