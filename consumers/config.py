"""Configuration of the Kafka side: pydantic-settings models (:class:`KafkaSettings`, how to reach
the broker; :class:`DetectSettings`, how ``detect`` runs), every field also read from
``DISTILLWATCH_<NAME>``. The detector's thresholds come from ``DISTILLWATCH_DETECTOR__<FIELD>``
variables and a JSON file (:func:`load_detector_config`).

Command-line options override the environment, which overrides the defaults below. Secrets
(``sasl_password``) are ``SecretStr`` so they never appear in logs or reprs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.core.config import DetectorConfig

#: the cyclic GC's thresholds the commands run the detector with (``gc.set_threshold``): it keeps
#: a large, long-lived heap of small state objects, which the default thresholds (700, 10, 10)
#: make the collector rescan constantly (bench ``core``: 1.1-1.4x faster with these, same flags)
GC_THRESHOLD = (50_000, 20, 100)


class KafkaSettings(BaseSettings):
    """How to reach the broker and which topics to use."""

    model_config = SettingsConfigDict(env_prefix="DISTILLWATCH_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    requests_topic: str = "llm.requests"
    flags_topic: str = "distillation.flags"
    dlq_topic: str = "llm.requests.dlq"
    internal_prefix: str = Field("distillwatch.", description="prefix of internal topics (changelogs, campaign stage)")
    group_id: str = "distillwatch-detector"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    client_id: str = "distillwatch"

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to producers, consumers and the admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def internal_topic(self, name: str) -> str:
        return f"{self.internal_prefix}{name}"


class DetectSettings(BaseSettings):
    """How ``distillwatch detect`` runs (every field also from ``DISTILLWATCH_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="DISTILLWATCH_", extra="ignore")

    stage: Literal["all", "account", "campaign", "policy"] = Field(
        "all", description="run every stage in this process (threads), or one (scale stages apart)")
    instance_id: str | None = Field(None, description="stable per replica (pod name); default host-pid")
    # 100 ms (Kafka Streams' default under exactly-once): a flag crosses three stages, each making
    # its outputs visible at its next checkpoint. Measured end to end at 2,000 events/s (README,
    # Performance; bench/latency.py): p50 / p99 1.43 / 3.56 s at 1000 ms, 0.80 / 2.67 s at 100 ms,
    # for +39% CPU per event at that rate and +13-16% when catching up (more checkpoints, each
    # rewriting the changed accounts' state)
    commit_interval_ms: int = Field(100, ge=10, description="checkpoint interval: outputs become visible this often")
    # while behind (a consume returned a full batch: catching up after a stop, a replayed backlog)
    # a checkpoint per batch costs a broker round trip and rewrites every changed account, and the
    # outputs wait for the backlog anyway. Measured (bench/run.py --only kafka, README): checkpoints
    # of the account stage 9 -> 5 and of the campaign stage 24 -> 4-6 on `day`
    catchup_commit_interval_ms: int = Field(
        1000, ge=10, description="checkpoint interval while behind (a consume returned a full batch)")
    # 20,000: while catching up a checkpoint followed every batch (before catchup_commit_interval_ms),
    # and each rewrites the changelog entries of the accounts changed since (~2.6 KB each) — fewer,
    # larger batches rewrote fewer. Measured with bench/run.py --only kafka --compare-batch-size 5000 (README,
    # Performance; one run, medians of 3): 5,000 -> 20,000 made the account stage 1.21x, the
    # three stages in turn 1.15x and in threads 1.06x faster on the broker. It does not delay
    # outputs under steady load: consume() returns what arrived within poll_timeout_s (0.1 s)
    batch_size: int = Field(20000, ge=1, description="messages per consume call (at most)")
    internal_partitions: int | None = Field(
        None, ge=1, description="partitions of internal topics when created (default: as the requests topic)")
    transaction_timeout_ms: int = Field(60000, ge=1000)
    detector_config: str | None = Field(None, description="JSON file of detector settings")
    http_port: int = Field(9400, ge=0, le=65535, description="/metrics, /healthz, /readyz; 0 = off")
    http_host: str = Field("0.0.0.0", description="address the HTTP server binds")
    statistics_interval_ms: int = Field(
        1000, ge=0, description="librdkafka statistics (consumer lag) interval; 0 = off")


DETECTOR_ENV_PREFIX = "DISTILLWATCH_DETECTOR__"


class DetectorConfigError(ValueError):
    """The detector configuration (environment or file) is not valid: the message says where."""


def load_detector_config(path: str | None, environ: Mapping[str, str] | None = None) -> DetectorConfig:
    """The detector's thresholds: the defaults, then ``DISTILLWATCH_DETECTOR__<FIELD>`` variables of
    the environment (a JSON value, or a plain string), then a JSON file of ``DetectorConfig`` fields.

    >>> load_detector_config(None, {"DISTILLWATCH_DETECTOR__TICK_MS": "600000"}).tick_ms
    600000
    >>> load_detector_config(None, {"DISTILLWATCH_DETECTOR__TIK_MS": "1"})
    Traceback (most recent call last):
    ...
    consumers.config.DetectorConfigError: DISTILLWATCH_DETECTOR__TIK_MS: DetectorConfig has no field 'tik_ms'
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.upper().startswith(DETECTOR_ENV_PREFIX):
            continue
        field = name[len(DETECTOR_ENV_PREFIX):].lower()
        if field not in DetectorConfig.model_fields:
            raise DetectorConfigError(f"{name}: DetectorConfig has no field {field!r}")
        try:
            values[field] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            values[field] = raw
    if path:
        try:
            with open(path, "rb") as f:
                from_file = orjson.loads(f.read())
        except OSError as e:
            raise DetectorConfigError(f"{path}: {e.strerror}") from None
        except orjson.JSONDecodeError as e:
            raise DetectorConfigError(f"{path}: not JSON: {e}") from None
        if not isinstance(from_file, dict):
            raise DetectorConfigError(f"{path}: must be a JSON object of DetectorConfig fields")
        values.update(from_file)
    try:
        return DetectorConfig.model_validate(values)
    except ValidationError as e:
        where = f" (environment{' and ' + path if path else ''})"
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise DetectorConfigError(problems + where) from None
