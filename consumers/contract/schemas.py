"""``distillwatch schemas``: the JSON Schemas in ``schemas/``, generated from the pydantic models.

``--write`` regenerates them; ``--check`` (the default) exits 1 when a checked-in file differs
from what the models generate, so a change to the contract cannot slip in unnoticed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from consumers.contract.events import RequestEvent
from consumers.contract.flags import REASON_CODES, Flag

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def generated() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every contract model."""
    ev = RequestEvent.model_json_schema(mode="validation")
    ev["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    ev["description"] = "RequestEvent v1: one per API request, emitted by the gateway (shared/CONTRACT.md)."
    fl = Flag.model_json_schema(mode="validation")
    fl["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    fl["description"] = "Flag v1: one per decision about an account (shared/CONTRACT.md)."
    fl["$defs"]["Reason"]["properties"]["code"]["enum"] = sorted(REASON_CODES)
    return {"request_event.v1.json": ev, "flag.v1.json": fl}


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    bad = []
    for name, schema in generated().items():
        path = directory / name
        if not path.exists() or path.read_bytes() != render(schema):
            bad.append(name)
    return bad


def write(directory: Path = SCHEMA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in generated().items():
        (directory / name).write_bytes(render(schema))


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="regenerate schemas/*.json")
    g.add_argument("--check", action="store_true", help="fail if schemas/*.json are out of date (default)")
    p.add_argument("--dir", type=Path, default=SCHEMA_DIR)


def run(args: argparse.Namespace) -> int:
    if args.write:
        write(args.dir)
        print(f"wrote {', '.join(generated())} to {args.dir}")
        return 0
    bad = check(args.dir)
    if bad:
        print(f"out of date: {', '.join(bad)} — run `distillwatch schemas --write`", file=sys.stderr)
        return 1
    print("schemas are up to date")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m consumers.contract.schemas")
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))
