"""``distillwatch run-stage``: spec loading, topic maps, options."""

from __future__ import annotations

import argparse

import pytest

from consumers.run_stage import add_arguments, load_spec, parse_topic_map
from tests.integration.toy_stage import SPEC


def test_topic_map_and_spec_loading() -> None:
    assert parse_topic_map(["in=a.b", "out=c=d"]) == {"in": "a.b", "out": "c=d"}
    with pytest.raises(ValueError):
        parse_topic_map(["in"])
    assert load_spec("tests.integration.toy_stage:SPEC") is SPEC
    assert load_spec("tests.integration.toy_stage:make_spec").name == "toy"
    with pytest.raises(TypeError):
        load_spec("tests.integration.toy_stage:CountProcessor.process")
    with pytest.raises(ValueError):
        load_spec("tests.integration.toy_stage")


def test_run_stage_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--spec",
            "m:a",
            "--group-id",
            "g",
            "--topic",
            "in=x",
            "--topic",
            "out=y",
            "--stop-at-end",
            "--instance-id",
            "i",
        ]  # fmt: skip
    )
    assert args.topic == ["in=x", "out=y"] and args.stop_at_end and args.instance_id == "i"
