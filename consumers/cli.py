"""The ``distillwatch`` console script: one subcommand per module.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file
only wires them together, so the room for a change is the module named after the command.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from confluent_kafka import KafkaException

from consumers import logs
from consumers.config import GC_THRESHOLD, DetectorConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("consumers.demo", "local broker + simulated campaign + detector + quality, end to end"),
    "detect": ("consumers.detect", "the long-running consumer (all stages, or one with --stage)"),
    "replay": ("consumers.replay", "run the detector over a JSONL file (or a historical topic range)"),
    "simulate": ("consumers.sim.cli", "generate labelled traffic (benign personas + attack families)"),
    "evaluate": ("consumers.evaluate.cli", "quality report of flags against ground-truth labels"),
    "evaluate-standard": ("consumers.evaluate.standard", "simulate + replay + evaluate the standard scenarios"),
    "evaluate-sweep": ("consumers.evaluate.sweep", "simulate + replay + evaluate the adversary space, per dimension"),
    "diff": ("consumers.diff", "compare the flags of two runs (shadow comparison)"),
    "schemas": ("consumers.contract.schemas", "write or check the JSON Schemas in schemas/"),
    "enforce": ("consumers.enforce.cli", "reference enforcement subscriber: flags -> SQLite/PostgreSQL store"),
    "inspect": ("consumers.enforce.inspect_cli", "an account's or campaign's flag history from the store"),
    "run-stage": ("consumers.run_stage", "run any StageSpec on Kafka (development and tests)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillwatch", description="Detect LLM distillation campaigns in a Kafka request stream.")
    p.add_argument("--log-level", default=os.environ.get("DISTILLWATCH_LOG_LEVEL", "INFO"))
    p.add_argument("--log-format", choices=("json", "console"), default=os.environ.get("DISTILLWATCH_LOG_FORMAT", "json"))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        sp = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().split("\n\n")[0])
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLD)  # see GC_THRESHOLD
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except KafkaException as e:  # unreachable broker, refused credentials...: one clear line
        print(f"distillwatch {args.command}: Kafka error: {e.args[0] if e.args else e} (check "
              "DISTILLWATCH_BOOTSTRAP_SERVERS, DISTILLWATCH_SECURITY_PROTOCOL and the credentials)",
              file=sys.stderr)
        return 1
    except DetectorConfigError as e:
        print(f"distillwatch {args.command}: detector configuration: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # e.g. `distillwatch replay ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
