"""A Quix Streams peer of the account stage, on the same requests topic (optional: ``bench`` extra).

What the peer does, per message: JSON-decode the value (Quix's own ``json`` deserializer), and
fold it into a **per-account hourly tumbling window** (the message key is the account id; the
window runs on the message timestamp, i.e. the event's ``ts_ms``) aggregating ``count``,
``sum(output_tokens)`` and ``max(latency_ms)``, emitting each window when it closes
(``.final()``; the results go nowhere — no sink, no output topic). State lives in RocksDB with
Quix's changelog topic; ``processing_guarantee="at-least-once"`` and Quix's defaults otherwise
(``commit_interval`` 5 s). It is the kind of stateful per-key work a stream processor is built
for, without detection: a yardstick for the account stage (issue #13: the account stage alone
≥ 1.5x this peer).

Timing as the detect rows: wall time from ``Application(...)`` construction (topic checks,
group join, changelog topic creation and recovery) until ``run()`` returned after the last input
message was processed and committed; *streaming* from the first to the last processed message.
The app is stopped from its ``on_message_processed`` callback once it has processed every
message of the topic.

``quixstreams`` is imported lazily: :func:`available` says whether it is installed, and the
Kafka section skips the peer with a message when it is not (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from datetime import timedelta
from typing import Any

#: the package the peer needs, and how to get it
REQUIREMENT = "quixstreams (pip install -e '.[bench]', or make bench)"


def available() -> str | None:
    """The installed quixstreams version, or None when it is not installed."""
    try:
        with warnings.catch_warnings():  # its dependencies warn about their own dependencies
            warnings.simplefilter("ignore")
            import quixstreams
    except ImportError:
        return None
    return str(getattr(quixstreams, "__version__", "?"))


def build_app(bootstrap: str, topic: str, group: str, state_dir: str, n_expected: int,
              progress: dict[str, Any]) -> Any:
    """The Quix ``Application`` with its dataframe: per-account hourly tumbling count/sum/max.

    ``progress`` is updated from the ``on_message_processed`` callback (``processed``, ``first``,
    ``last``); the app stops itself once ``n_expected`` messages were processed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from quixstreams import Application
        from quixstreams.dataframe.windows import Count, Max, Sum

    app: Any = None

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        now = time.perf_counter()
        if progress["first"] is None:
            progress["first"] = now
        progress["last"] = now
        progress["processed"] += 1
        if progress["processed"] >= n_expected and app is not None:
            app.stop()

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        state_dir=state_dir,
        loglevel=logging.WARNING,
        on_message_processed=on_processed,
        consumer_poll_timeout=0.1,
    )
    requests = app.topic(topic, value_deserializer="json", key_deserializer="bytes")
    sdf = app.dataframe(requests)
    (sdf.tumbling_window(timedelta(hours=1))
           .agg(count=Count(), output_tokens=Sum("output_tokens"), max_latency_ms=Max("latency_ms"))
           .final())  # the app tracks its dataframes itself
    return app


def run_peer(bootstrap: str, topic: str, group: str, n_expected: int,
             timeout: float = 600.0) -> dict[str, Any]:
    """One run of the peer over the whole topic: ``{"seconds", "streaming_seconds", "messages"}``.

    Raises ``TimeoutError`` when it has not processed ``n_expected`` messages in ``timeout``.
    """
    import threading

    progress: dict[str, Any] = {"processed": 0, "first": None, "last": None}
    state_dir = tempfile.mkdtemp(prefix="dw-bench-quix-")
    timer: threading.Timer | None = None
    try:
        t0 = time.perf_counter()
        app = build_app(bootstrap, topic, group, state_dir, n_expected, progress)
        timer = threading.Timer(timeout, app.stop)
        timer.daemon = True
        timer.start()
        app.run()
        t1 = time.perf_counter()
    finally:
        if timer is not None:
            timer.cancel()
        shutil.rmtree(state_dir, ignore_errors=True)
    if progress["processed"] < n_expected:
        raise TimeoutError(f"quix peer on {topic}: {progress['processed']}/{n_expected} messages "
                           f"in {timeout:.0f}s")
    return {"seconds": t1 - t0,
            "streaming_seconds": (progress["last"] or t1) - (progress["first"] or t0),
            "messages": progress["processed"]}
