"""``distillwatch enforce`` on the real broker: flags of a simulated campaign → a SQLite store.

The flags come from ``simulate --scenario smoke`` + ``replay --input``; they are published with a
transactional producer, next to an ABORTED transaction of bogus flags (a read_committed reader
must never see them) and a malformed record. Then:

* ``enforce --until-end`` applies every committed flag once (one audit row per flag_id, one for
  the malformed record, nothing from the aborted transaction);
* a second ``enforce --until-end`` in another group re-reads the whole topic: the store is
  identical (full dump of every table) — idempotent by ``flag_id``;
* the first group again has nothing to read (offsets were committed after the DB commit);
* without ``--until-end``, SIGTERM stops it cleanly (exit 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from consumers.enforce.store import Store
from tests.enforce_cases import flag
from tests.kafka_helpers import create_topics, produce

CLI = [sys.executable, "-m", "consumers.cli"]


def _cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLWATCH_")}
    return subprocess.run(CLI + args, env=base | (env or {}), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def flags_file(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    d = tmp_path_factory.mktemp("enforce")
    ev, fl = d / "events.jsonl", d / "flags.jsonl"
    r = _cli(["simulate", "--scenario", "smoke", "--seed", "1", "--output", str(ev), "--labels", str(d / "l.jsonl")])
    assert r.returncode == 0, r.stderr
    r = _cli(["replay", "--input", str(ev), "--output", str(fl)])
    assert r.returncode == 0, r.stderr
    lines = fl.read_bytes().splitlines()
    assert len(lines) > 50
    return lines


def test_enforce_until_end_twice(kafka_bootstrap: str, topic_prefix: str, flags_file: list[bytes],
                                 tmp_path: Path) -> None:
    topic = topic_prefix + "flags"
    create_topics(kafka_bootstrap, [topic])
    half = len(flags_file) // 2
    msgs = [(orjson.loads(f)["account_id"].encode(), f) for f in flags_file]
    produce(kafka_bootstrap, topic, msgs[:half], transactional_id=topic_prefix + "tx")
    bogus = [(b"ghost", flag("ghost", "suspend", 1))]
    produce(kafka_bootstrap, topic, bogus, transactional_id=topic_prefix + "tx", abort=True)
    produce(kafka_bootstrap, topic, [(b"bad", b"not a flag")], transactional_id=topic_prefix + "tx")
    produce(kafka_bootstrap, topic, msgs[half:], transactional_id=topic_prefix + "tx")

    db = tmp_path / "enforce.db"
    env = {"DISTILLWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "DISTILLWATCH_FLAGS_TOPIC": topic,
           "DISTILLWATCH_ENFORCE_STORE": f"sqlite:///{db}"}
    t0 = time.monotonic()
    r1 = _cli(["enforce", "--until-end", "--group-id", topic_prefix + "g1"], env)
    secs = time.monotonic() - t0
    assert r1.returncode == 0, r1.stderr[-3000:]
    with Store(str(db)) as s:
        dump1 = s.dump()
        outcomes = s.rows("SELECT outcome, COUNT(*) AS n FROM audit GROUP BY outcome")
        assert not s.rows("SELECT * FROM audit WHERE account_id = 'ghost'"), "read an aborted transaction"
    n = {o["outcome"]: o["n"] for o in outcomes}
    assert n.pop("malformed") == 1
    assert sum(n.values()) == len({orjson.loads(f)["flag_id"] for f in flags_file})
    assert '"malformed": 1' in r1.stderr  # the counters of the run

    r2 = _cli(["enforce", "--until-end", "--group-id", topic_prefix + "g2"], env)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert f'"duplicate": {len(flags_file)}' in r2.stderr
    with Store(str(db)) as s:
        assert s.dump() == dump1, "re-reading the topic changed the store"

    r3 = _cli(["enforce", "--until-end", "--group-id", topic_prefix + "g1"], env)
    assert r3.returncode == 0 and '"records"' not in r3.stderr, r3.stderr[-2000:]
    print(f"enforce --until-end: {len(flags_file)} flags in {secs:.1f}s")


def test_enforce_sigterm(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    topic = topic_prefix + "flags"
    create_topics(kafka_bootstrap, [topic])
    produce(kafka_bootstrap, topic, [(b"a", flag("a", "review", 5))], transactional_id=topic_prefix + "tx")
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLWATCH_")}
    env = base | {"DISTILLWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "DISTILLWATCH_FLAGS_TOPIC": topic}
    db = tmp_path / "e.db"
    p = subprocess.Popen(CLI + ["enforce", "--store", str(db), "--group-id", topic_prefix + "g"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                with Store(str(db)) as s:
                    if s.rows("SELECT * FROM enforcement_state"):
                        break
            time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-2000:]
    assert "enforce_stopped" in err
