"""DetectorConfig: environment and file overrides, and that its weights are the ones used."""

from __future__ import annotations

import orjson
import pytest

from consumers.config import DetectorConfigError, load_detector_config
from consumers.core.account_stage import behaviour_evidence
from consumers.core.config import DetectorConfig
from consumers.core.features import AccountState


def test_environment_then_file_override_the_defaults(tmp_path) -> None:
    env = {"DISTILLWATCH_DETECTOR__TICK_MS": "600000", "DISTILLWATCH_DETECTOR__SEED": "7",
           "DISTILLWATCH_DETECTOR__LINK_MIN_UNITS": '{"prompt": 3, "para": 4, "ip": 4, "pay": 2, "ua": 4, "wave": 8}',
           "OTHER": "x"}
    f = tmp_path / "d.json"
    f.write_bytes(orjson.dumps({"seed": 9}))
    cfg = load_detector_config(str(f), env)
    assert (cfg.tick_ms, cfg.seed, cfg.link_min_units["prompt"]) == (600_000, 9, 3)
    assert load_detector_config(None, {}) == DetectorConfig()


@pytest.mark.parametrize(("env", "file", "message"), [
    ({"DISTILLWATCH_DETECTOR__NOPE": "1"}, None, "has no field 'nope'"),
    ({"DISTILLWATCH_DETECTOR__TICK_MS": "soon"}, None, "tick_ms: Input should be a valid integer"),
    ({}, b"[1]", "must be a JSON object"),
    ({}, b"{not json", "not JSON"),
    ({}, b'{"extraction_weights": {"capability": 1}}', "extraction_weights: expected the keys"),
    ({}, b'{"signal_ramps": {"capability": [0.6, 0], "elicitation": [0.4, 0.45], "round_the_clock": [0.75, 0.2],'
         b' "volume": [300, 1200], "anomaly": [0.95, 0.05], "extraction_capability": [0.5, 0.35],'
         b' "extraction_elicitation": [0.15, 0.35]}}', "every width must be > 0"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, env, file, message) -> None:
    path = None
    if file is not None:
        path = tmp_path / "d.json"
        path.write_bytes(file)
    with pytest.raises(DetectorConfigError, match=message):
        load_detector_config(str(path) if path else None, env)


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DetectorConfigError, match="No such file"):
        load_detector_config(str(tmp_path / "absent.json"), {})


def _coder() -> AccountState:
    st = AccountState.new(None, created_ms=0, ts_ms=0)
    for i in range(12):
        st.update({"ts_ms": i * 3_600_000, "task_category": "coding", "reasoning_elicitation": 0.1,
                   "tool_use": False, "input_tokens": 10, "output_tokens": 100, "model": "m"})
    return st


def test_extraction_weights_and_ramps_come_from_the_config() -> None:
    st = _coder()  # all coding, little elicitation, a dozen requests: only the capability term
    base = behaviour_evidence(st, 0.0, DetectorConfig())[2]
    assert base == pytest.approx(0.45)
    w = dict(DetectorConfig().extraction_weights, capability=0.2)
    assert behaviour_evidence(st, 0.0, DetectorConfig(extraction_weights=w))[2] == pytest.approx(0.2)
    ramps = dict(DetectorConfig().signal_ramps, extraction_capability=(0.0, 2.0))
    assert behaviour_evidence(st, 0.0, DetectorConfig(signal_ramps=ramps))[2] == pytest.approx(0.45 * 0.5)
