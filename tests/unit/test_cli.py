"""The ``distillwatch`` command: every subcommand imports and documents itself; ``detect`` options
come from the environment and the command line overrides them; secrets never reach a repr."""

from __future__ import annotations

import argparse

import pytest

from consumers.cli import COMMANDS, build_parser
from consumers.config import DetectSettings, KafkaSettings
from consumers.detect import kafka_settings


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    assert "usage: distillwatch " + command in capsys.readouterr().out


def test_contract_commands_exist() -> None:
    # shared/CONTRACT.md: these forms must exist and keep working
    for c in ("demo", "detect", "replay", "simulate", "evaluate"):
        assert c in COMMANDS


def test_detect_options_come_from_the_environment_and_the_command_line_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLWATCH_BOOTSTRAP_SERVERS", "broker-a:9092")
    monkeypatch.setenv("DISTILLWATCH_GROUP_ID", "from-env")
    monkeypatch.setenv("DISTILLWATCH_COMMIT_INTERVAL_MS", "2500")
    args = build_parser().parse_args(["detect", "--group-id", "from-cli"])
    k = kafka_settings(args)
    assert k.bootstrap_servers == "broker-a:9092"
    assert k.group_id == "from-cli"
    assert DetectSettings().commit_interval_ms == 2500


def test_the_sasl_password_is_never_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLWATCH_SASL_PASSWORD", "hunter2-secret")
    k = KafkaSettings()
    assert "hunter2-secret" not in repr(k) and "hunter2-secret" not in str(k.model_dump())
    assert k.client_config()["sasl.password"] == "hunter2-secret"  # only handed to librdkafka


def test_the_catch_up_checkpoint_interval_reaches_every_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.core.config import DetectorConfig
    from consumers.kafka.deployment import build_runners
    from consumers.run_stage import add_arguments as run_stage_arguments

    monkeypatch.setenv("DISTILLWATCH_CATCHUP_COMMIT_INTERVAL_MS", "2500")
    runners = build_runners(KafkaSettings(), DetectorConfig(), DetectSettings(), ("account", "campaign", "policy"))
    assert [r.options.catchup_commit_interval_ms for r in runners] == [2500, 2500, 2500]
    args = build_parser().parse_args(["detect", "--catchup-commit-interval-ms", "300"])
    assert args.catchup_commit_interval_ms == 300
    p = argparse.ArgumentParser()
    run_stage_arguments(p)
    assert p.parse_args(["--spec", "m:a", "--group-id", "g"]).catchup_commit_interval_ms == 1000
