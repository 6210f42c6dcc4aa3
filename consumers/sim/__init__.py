"""Traffic simulator: seeded, streaming RequestEvent v1 traffic with ground-truth labels.

Benign personas (the hard negatives of THREATS.md) and attack families (hydra, cot_harvest,
blended, heavy_scraper, hydra_evasive, hydra_stealth) are built per scenario (:mod:`consumers.sim.scenarios`
holds every parameter; the ``sweep`` scenario draws its campaigns from a space of evasion
dimensions instead, :mod:`consumers.sim.sweep`); :class:`Simulation` merges the accounts' lazy arrival processes into one
``ts_ms``-sorted stream whose memory does not grow with the number of events.

    >>> events, labels = generate(get_scenario("smoke", scale=0.1), seed=1)
    >>> next(events)["schema_version"], {lab["label"] for lab in labels} == {"benign", "attack"}
    (1, True)

``write_events(events, "events.jsonl.gz")`` and ``write_labels(labels, "labels.jsonl")`` write
them; ``produce_events(events, topic, settings)`` sends them to Kafka.
"""

from consumers.sim.generator import Simulation, generate
from consumers.sim.scenarios import SCENARIOS, Scenario, get_scenario
from consumers.sim.writer import produce_events, read_jsonl, write_events, write_labels

__all__ = [
    "SCENARIOS",
    "Scenario",
    "Simulation",
    "generate",
    "get_scenario",
    "produce_events",
    "read_jsonl",
    "write_events",
    "write_labels",
]
