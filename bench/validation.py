"""Validation cost on the hot path: µs per RequestEvent for each way of decoding + validating it.

Variants (all take the raw JSON bytes of one message):

* ``orjson.loads`` — decoding alone, no validation (the baseline of every ratio);
* ``parse_event`` — what the account stage runs: orjson + hand-written type/range checks;
* ``RequestEvent.model_validate_json`` — the pydantic reference model, straight from bytes
  (returns a frozen model, not the dict the core works on);
* ``... .model_dump()`` — the same plus converting back to the dict the core needs;
* ``RequestEvent.model_validate(orjson.loads(raw))`` — decode with orjson, validate the dict;
* ``TypeAdapter(TypedDict).validate_json`` — a pydantic ``TypedDict`` with the model's field
  annotations and its two field validators (no bool ``schema_version``, unknown
  ``task_category`` → ``"other"``), which returns a dict like ``parse_event``.

Noise control: the sample is cut into blocks and every block is timed under every variant in a
rotating order, so a burst of load from a neighbour hits all variants alike; a repeat is one pass
over the whole sample, and the table shows the median over repeats.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import orjson

from bench.common import make_row, set_ratio

SECTION = "validation"
BASELINE = "orjson.loads"


def _typed_dict_adapter() -> Callable[[bytes], Any]:
    """``TypeAdapter(RequestEventTD).validate_json`` built from the model's own annotations."""
    from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter
    from typing_extensions import TypedDict

    from consumers.contract.events import TASK_CATEGORIES, RequestEvent

    def no_bool(v: Any) -> Any:
        if type(v) is bool:
            raise ValueError("schema_version must be the integer 1")
        return v

    def category(v: str) -> str:
        return v if v in TASK_CATEGORIES else "other"

    hints = typing.get_type_hints(RequestEvent, include_extras=True)
    version_type, category_type = hints["schema_version"], hints["task_category"]
    hints["schema_version"] = Annotated[version_type, BeforeValidator(no_bool)]
    hints["task_category"] = Annotated[category_type, AfterValidator(category)]
    td = TypedDict("RequestEventTD", hints)  # type: ignore[misc]  # functional form, dynamic fields
    td.__pydantic_config__ = ConfigDict(strict=True, extra="ignore")  # type: ignore[attr-defined]
    return TypeAdapter(td).validate_json


def variants() -> list[tuple[str, Callable[[bytes], Any]]]:
    """``(name, fn(raw) -> validated)`` for every measured variant, baseline first."""
    from consumers.contract.events import RequestEvent, parse_event

    loads = orjson.loads
    mvj = RequestEvent.model_validate_json
    mv = RequestEvent.model_validate
    return [
        (BASELINE, loads),
        ("parse_event (orjson + hand checks)", parse_event),
        ("RequestEvent.model_validate_json", mvj),
        ("RequestEvent.model_validate_json().model_dump()", lambda r: mvj(r).model_dump()),
        ("RequestEvent.model_validate(orjson.loads())", lambda r: mv(loads(r))),
        ("TypeAdapter(TypedDict).validate_json", _typed_dict_adapter()),
    ]


def sample(raw: Sequence[bytes], n: int) -> list[bytes]:
    """``n`` messages spread evenly over ``raw`` (all of them when ``n >= len(raw)``)."""
    if n >= len(raw):
        return list(raw)
    step = len(raw) / n
    return [raw[int(i * step)] for i in range(n)]


def run(raw: Sequence[bytes], repeat: int = 3, max_events: int = 20_000, block: int = 500
        ) -> dict[str, Any]:
    """Measure every variant over (a sample of) ``raw``; returns the ``validation`` section."""
    data = sample(raw, max_events)
    if not data:
        raise ValueError("no events to validate")
    fns = variants()
    # every variant must accept every message of the sample (else we would time error paths)
    for _name, f in fns:
        for r in data[:200]:
            f(r)
    names = [n for n, _ in fns]
    per_event: dict[str, list[float]] = {n: [] for n in names}
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    clock = time.perf_counter_ns
    k = len(fns)
    for _ in range(repeat):
        total = dict.fromkeys(names, 0)
        for bi, chunk in enumerate(blocks):
            order = fns[bi % k:] + fns[:bi % k]
            for name, f in order:
                t0 = clock()
                for r in chunk:
                    f(r)
                total[name] += clock() - t0
        for name in names:
            per_event[name].append(total[name] / len(data) / 1000.0)
    rows = [make_row(SECTION, name, per_event[name], "µs/event") for name in names]
    for r in rows:
        set_ratio(r, rows[0])
    parse = rows[1]["median"] - rows[0]["median"]
    rows[1]["note"] = f"hand checks ≈ {parse:.2f} µs on top of decoding"
    return {
        "section": SECTION,
        "rows": rows,
        "info": {"events": len(data), "avg_bytes": sum(map(len, data)) / len(data),
                 "repeat": repeat, "block": block},
    }
