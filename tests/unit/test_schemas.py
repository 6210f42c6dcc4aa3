"""The JSON Schemas in ``schemas/`` and the Flag v1 model.

* the checked-in schemas are exactly what the models generate (fails when a model changes and
  nobody ran ``distillwatch schemas --write``);
* the generated schemas accept a valid event/flag and reject invalid ones — with ``jsonschema``
  when it is installed, and always with a small validator of the keywords the schemas use (it
  refuses any keyword it does not know, so a schema change cannot make it pass vacuously);
* the structure matches the contract: required fields, reason-code enum;
* :class:`Flag` rejects undocumented reason codes, and every flag the pipeline produces on
  eventgen data validates.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers.contract import schemas
from consumers.contract.events import RequestEvent
from consumers.contract.flags import ACTIONS, REASON_CODES, Flag, Reason, flag_id_for
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from tests.eventgen import scenario, valid_event

#: RequestEvent v1 fields, in the order of shared/CONTRACT.md
CONTRACT_EVENT_FIELDS = [
    "schema_version", "event_id", "ts_ms", "account_id", "org_id", "api_key_id",
    "account_created_ms", "account_tier", "model", "input_tokens", "output_tokens", "latency_ms",
    "status", "client_ip_prefix", "asn", "country", "user_agent", "payment_fingerprint",
    "prompt_simhash", "task_category", "reasoning_elicitation", "tool_use", "n_turns",
]
#: Flag v1 fields, in the order of shared/CONTRACT.md
CONTRACT_FLAG_FIELDS = [
    "schema_version", "flag_id", "account_id", "org_id", "action", "score", "reasons",
    "campaign_id", "campaign_size", "decided_at_ms", "window_start_ms", "detector_version",
]

HAVE_JSONSCHEMA = importlib.util.find_spec("jsonschema") is not None


# --- a small JSON Schema validator (the subset pydantic generates here) -------------------------

_ANNOTATIONS = {"$schema", "title", "description", "default"}
_KNOWN = _ANNOTATIONS | {"type", "const", "enum", "minimum", "maximum", "minLength", "maxLength",
                         "pattern", "anyOf", "properties", "required", "additionalProperties",
                         "items", "$ref", "$defs"}


def _type_ok(v: Any, t: str) -> bool:
    if t == "integer":
        return type(v) is int or (type(v) is float and v.is_integer())
    if t == "number":
        return type(v) in (int, float)
    return {"string": str, "boolean": bool, "null": type(None), "object": dict, "array": list}[t] is type(v)


def _ecma_pattern(p: str) -> re.Pattern[str]:
    # ECMA-262 '$' (no multiline) matches only at the very end, unlike Python's
    return re.compile(p[:-1] + r"\Z" if p.endswith("$") else p)


def mini_errors(schema: dict[str, Any], v: Any, root: dict[str, Any] | None = None, path: str = "$") -> list[str]:
    """Validation errors of ``v`` against ``schema`` (empty list: valid)."""
    root = root if root is not None else schema
    unknown = set(schema) - _KNOWN
    if unknown:
        raise AssertionError(f"validator does not know keywords {unknown} at {path}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return mini_errors(root["$defs"][ref[len("#/$defs/"):]], v, root, path)
    errs: list[str] = []
    if "anyOf" in schema:
        if all(mini_errors(s, v, root, path) for s in schema["anyOf"]):
            errs.append(f"{path}: matches none of anyOf")
    if "type" in schema and not _type_ok(v, schema["type"]):
        return errs + [f"{path}: not {schema['type']}"]
    if "const" in schema and not (v == schema["const"] and type(v) is not bool):
        errs.append(f"{path}: != const")
    if "enum" in schema and v not in schema["enum"]:
        errs.append(f"{path}: not in enum")
    if isinstance(v, int | float) and not isinstance(v, bool):
        if "minimum" in schema and v < schema["minimum"]:
            errs.append(f"{path}: < minimum")
        if "maximum" in schema and v > schema["maximum"]:
            errs.append(f"{path}: > maximum")
    if isinstance(v, str):
        if len(v) < schema.get("minLength", 0):
            errs.append(f"{path}: too short")
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            errs.append(f"{path}: too long")
        if "pattern" in schema and not _ecma_pattern(schema["pattern"]).search(v):
            errs.append(f"{path}: pattern")
    if isinstance(v, dict):
        for k in schema.get("required", []):
            if k not in v:
                errs.append(f"{path}.{k}: required")
        props = schema.get("properties", {})
        for k, sub in v.items():
            if k in props:
                errs += mini_errors(props[k], sub, root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}.{k}: additional property")
    if isinstance(v, list) and "items" in schema:
        for i, item in enumerate(v):
            errs += mini_errors(schema["items"], item, root, f"{path}[{i}]")
    return errs


def _validators() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("mini", lambda s, v: not mini_errors(s, v))]
    if HAVE_JSONSCHEMA:
        import jsonschema

        out.append(("jsonschema", lambda s, v: jsonschema.Draft202012Validator(s).is_valid(v)))
    return out


VALIDATORS = _validators()


def _schema(name: str) -> dict[str, Any]:
    return orjson.loads((schemas.SCHEMA_DIR / name).read_bytes())


@pytest.fixture(scope="module")
def pipeline_flags() -> list[bytes]:
    ds = scenario(seed=3, n_benign=20, n_org=6, n_hydra=20, scraper=True, days=2)
    return LocalPipeline(DetectorConfig()).feed(ds.lines())


def _sample_flag() -> dict[str, Any]:
    return {
        "schema_version": 1, "flag_id": flag_id_for("a", "suspend", "cmp-1", 5, "0.1.0"),
        "account_id": "a", "org_id": None, "action": "suspend", "score": 0.9,
        "reasons": [{"code": "CAMPAIGN_MEMBER", "detail": "member of a campaign of 7", "value": 7}],
        "campaign_id": "cmp-1", "campaign_size": 7, "decided_at_ms": 5, "window_start_ms": 1,
        "detector_version": "0.1.0",
    }


# --- schemas/ in sync --------------------------------------------------------------------------

def test_checked_in_schemas_up_to_date() -> None:
    assert schemas.check() == [], "run `distillwatch schemas --write` and commit schemas/"


def test_check_detects_drift(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert schemas.check(tmp_path) == []
    p = tmp_path / "flag.v1.json"
    s = orjson.loads(p.read_bytes())
    s["properties"]["action"]["enum"].append("ban")
    p.write_bytes(schemas.render(s))
    assert schemas.check(tmp_path) == ["flag.v1.json"]
    (tmp_path / "request_event.v1.json").unlink()
    assert sorted(schemas.check(tmp_path)) == ["flag.v1.json", "request_event.v1.json"]


def test_rendering_is_deterministic() -> None:
    a = {n: schemas.render(s) for n, s in schemas.generated().items()}
    b = {n: schemas.render(s) for n, s in schemas.generated().items()}
    assert a == b


# --- structure ---------------------------------------------------------------------------------

def test_event_schema_structure() -> None:
    s = _schema("request_event.v1.json")
    assert s["required"] == CONTRACT_EVENT_FIELDS
    assert list(RequestEvent.model_fields) == CONTRACT_EVENT_FIELDS
    assert sorted(s["properties"]) == sorted(CONTRACT_EVENT_FIELDS)
    assert s.get("additionalProperties") is not False, "unknown extra fields are ignored"
    assert s["properties"]["schema_version"]["const"] == 1
    assert s["properties"]["user_agent"]["anyOf"][0]["maxLength"] == 512


def test_flag_schema_structure() -> None:
    s = _schema("flag.v1.json")
    assert sorted(s["properties"]) == sorted(CONTRACT_FLAG_FIELDS)
    assert set(s["required"]) == set(CONTRACT_FLAG_FIELDS) - {"schema_version"}
    assert s["additionalProperties"] is False
    assert s["$defs"]["Reason"]["properties"]["code"]["enum"] == sorted(REASON_CODES)
    assert s["properties"]["action"]["enum"] == list(ACTIONS)


# --- validation with the schemas -----------------------------------------------------------------

@pytest.mark.parametrize(("vname", "validate"), VALIDATORS, ids=[n for n, _ in VALIDATORS])
def test_event_schema_validates(vname: str, validate: Any) -> None:
    s = _schema("request_event.v1.json")
    assert validate(s, valid_event())
    assert validate(s, valid_event(task_category="poetry", account_tier="platinum", extra=1,
                                   org_id=None, country=None, user_agent=None, asn=None))
    bad = [valid_event(ts_ms=-1), valid_event(ts_ms="1"), valid_event(schema_version=2),
           valid_event(country="DEU"), valid_event(prompt_simhash="xyz"),
           valid_event(reasoning_elicitation=1.5), valid_event(n_turns=0), valid_event(event_id=""),
           valid_event(user_agent="u" * 513), valid_event(tool_use=1), valid_event(org_id=3)]
    missing = valid_event()
    del missing["prompt_simhash"]
    if vname == "mini":
        # ECMA-262 '$' does not match before a trailing newline (the jsonschema package uses
        # Python's re, whose '$' does, so it is not asked)
        bad.append(valid_event(country="DE\n"))
    for ev in [*bad, missing, [valid_event()], "event"]:
        assert not validate(s, ev), ev


@pytest.mark.parametrize(("vname", "validate"), VALIDATORS, ids=[n for n, _ in VALIDATORS])
def test_flag_schema_validates(vname: str, validate: Any, pipeline_flags: list[bytes]) -> None:
    s = _schema("flag.v1.json")
    assert validate(s, _sample_flag())
    for raw in pipeline_flags:
        assert validate(s, orjson.loads(raw)), raw
    for field, value in [("action", "ban"), ("score", 1.5), ("campaign_size", 0), ("account_id", ""),
                         ("unknown", 1), ("reasons", [{"code": "MADE_UP", "detail": "x"}]),
                         ("reasons", [{"code": "HIGH_VOLUME"}])]:
        f = _sample_flag()
        f[field] = value
        assert not validate(s, f), (field, value)
    f = _sample_flag()
    del f["flag_id"]
    assert not validate(s, f)


def test_mini_validator_refuses_unknown_keywords() -> None:
    s = copy.deepcopy(_schema("request_event.v1.json"))
    s["properties"]["ts_ms"]["multipleOf"] = 2
    with pytest.raises(AssertionError, match="multipleOf"):
        mini_errors(s, valid_event())


@pytest.mark.skipif(not HAVE_JSONSCHEMA, reason="jsonschema not installed")
def test_schemas_are_valid_draft_2020_12() -> None:
    import jsonschema

    for name in schemas.generated():
        jsonschema.Draft202012Validator.check_schema(_schema(name))


# --- the Flag model -----------------------------------------------------------------------------

def test_flag_model_accepts_sample() -> None:
    f = Flag.model_validate(_sample_flag())
    assert f.schema_version == 1 and f.reasons[0].code == "CAMPAIGN_MEMBER"


@pytest.mark.parametrize("code", ["MADE_UP", "campaign_member", "", "HIGH_VOLUME "])
def test_flag_rejects_undocumented_reason_code(code: str) -> None:
    f = _sample_flag()
    f["reasons"] = [{"code": code, "detail": "x", "value": 1}]
    with pytest.raises(ValueError, match="reason code"):
        Flag.model_validate(f)
    with pytest.raises(ValueError):
        Reason(code=code, detail="x")


@pytest.mark.parametrize(("field", "value"), [
    ("action", "ban"), ("score", -0.01), ("score", 1.01), ("campaign_size", 0), ("schema_version", 2),
    ("account_id", ""), ("account_id", "a" * 129), ("extra", "x"),
])
def test_flag_model_rejects(field: str, value: Any) -> None:
    f = _sample_flag()
    f[field] = value
    with pytest.raises(ValueError):
        Flag.model_validate(f)


def test_every_pipeline_flag_validates(pipeline_flags: list[bytes]) -> None:
    assert pipeline_flags, "the scenario must produce flags"
    actions = set()
    for raw in pipeline_flags:
        f = Flag.model_validate_json(raw)
        assert Flag.model_validate(orjson.loads(raw)) == f
        assert all(r.code in REASON_CODES for r in f.reasons)
        assert f.flag_id == flag_id_for(f.account_id, f.action, f.campaign_id, f.decided_at_ms,
                                        f.detector_version)
        assert (f.campaign_id is None) == (f.campaign_size is None)
        actions.add(f.action)
    assert {"throttle", "suspend"} & actions
