"""The account stage's state: changelog bytes and memory per account, and restoring 1M accounts.

Everything goes through the processor's public API, so a change of the state format is measured
as soon as it is made:

1. **realistic states** — :class:`~consumers.core.account_stage.AccountProcessor` processes the
   data set (simulated traffic: honest personas and campaigns), then ``take_changes()`` gives the
   changelog entries of every account it holds (*templates*). Memory per active account is
   measured here with ``tracemalloc``: the processor after the data set less a new, empty
   processor (its behaviour model; the first processor of a process also imports river and
   scipy, ~56 MB, so one is built before measuring), ÷ the accounts it holds (every one was
   active during the data set);
2. **cloning** — the changelog of ``accounts`` accounts (default 1M) is the templates' entries
   repeated under new account ids: an entry belongs to an account when its key ends with the
   account's id (``take_changes()`` keys ``a:<account>``); the clone's key and value have the id
   replaced (the value bytes are otherwise the processor's own serialisation). The stage's
   other entries (model, metadata) are written once;
3. **write** — the entries to a fresh compacted changelog topic on the broker (the runner's
   changelog settings, :data:`consumers.kafka.admin.CHANGELOG_CONFIG`, one partition), then the
   runner's offset marker, with an idempotent lz4 producer;
4. **restore** — what a new owner of the partition does
   (:func:`consumers.kafka.partitions.restore_processors`): :func:`consumers.kafka.changelog.read_changelog`
   of the whole partition (``read_committed``, up to the marker), then ``AccountProcessor.restore``.
   The changelog read is timed over all ``accounts``. The processors' ``restore`` is timed in
   chunks of ``chunk`` accounts, each into a fresh processor, and summed: the state of 1M
   accounts (tens of GB at today's size per account) does not fit in this machine's memory, so
   one processor never holds them all — the sum is the CPU cost of ``restore`` for all of them,
   without the heap of one huge process. The restored states of the first chunk are also
   measured with ``tracemalloc`` (memory per restored account) and checked: the processor must
   hold exactly the chunk's accounts.

The CLI's GC thresholds (``consumers.config.GC_THRESHOLD``, what ``distillwatch`` runs with)
are set while processing and restoring.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import Dataset, make_row
from consumers.config import GC_THRESHOLD

SECTION = "restore"


def _records(ds: Dataset, chunk: int = 4096) -> Iterator[list[Any]]:
    from consumers.core.stage import Record

    for start in range(0, len(ds), chunk):
        yield [Record(topic="requests", key=k, value=v, partition=0, offset=start + i, timestamp_ms=t)
               for i, (k, v, t) in enumerate(zip(ds.keys[start:start + chunk], ds.raw[start:start + chunk],
                                                 ds.ts[start:start + chunk], strict=True))]


def _held(proc: Any) -> int:
    """Accounts a processor holds (``state_size()`` when it reports them)."""
    size = proc.state_size() if hasattr(proc, "state_size") else {}
    if isinstance(size, dict) and "accounts" in size:
        return int(size["accounts"])
    return len(proc.accounts)


def _frozen(proc: Any) -> int | None:
    """Accounts a processor keeps frozen (idle ones, when ``state_size()`` reports them)."""
    size = proc.state_size() if hasattr(proc, "state_size") else {}
    return int(size["frozen"]) if isinstance(size, dict) and "frozen" in size else None


class Templates:
    """The account stage's changelog after the data set: per-account entries and the rest."""

    def __init__(self, accounts: dict[bytes, list[tuple[bytes, bytes | None]]],
                 other: list[tuple[bytes, bytes | None]], held: int, live_bytes: int,
                 empty_bytes: int = 0, frozen: int | None = None, model_growth: int = 0):
        self.accounts = accounts            # account id -> its entries (key ends with the id)
        self.other = other                  # model, metadata...
        self.held = held                    # accounts the processor held
        self.live_bytes = live_bytes        # tracemalloc: the processor after the data set
        self.empty_bytes = empty_bytes      # tracemalloc: a new, empty processor (its model)
        self.frozen = frozen                # of the accounts held, how many were frozen (idle)
        self.model_growth = model_growth    # tracemalloc: its trained model less a new one

    @property
    def active_bytes(self) -> float:
        """Memory per account held: the processor after the data set less a new one."""
        return (self.live_bytes - self.empty_bytes) / max(1, self.held)

    @property
    def marginal_bytes(self) -> float:
        """... and less what its behaviour model grew by learning: a per-partition constant (a
        forest of ``hst_trees`` trees of ``2^hst_height`` nodes, built as it learns), not state
        per account."""
        return (self.live_bytes - self.empty_bytes - self.model_growth) / max(1, self.held)

    @property
    def bytes_per_account(self) -> float:
        """Changelog bytes (key + value) per account."""
        total = sum(len(k) + len(v or b"") for es in self.accounts.values() for k, v in es)
        return total / max(1, len(self.accounts))


def templates(ds: Dataset, cfg: Any = None) -> Templates:
    """Process ``ds`` through a fresh ``AccountProcessor`` (under ``tracemalloc``) and split its
    ``take_changes()`` into per-account entries and the rest."""
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import DetectorConfig
    from consumers.core.models.behaviour import BehaviourModel

    cfg = cfg or DetectorConfig()
    ids = {k for k in ds.keys}
    lengths = sorted({len(k) for k in ids}, reverse=True)
    # the first processor of a process imports river and scipy (~56 MB): not state, so it is
    # built before measuring (its new behaviour model is the baseline of the model's growth below)
    first = AccountProcessor(cfg, 0)
    saved = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        proc = AccountProcessor(cfg, 0)
        empty = tracemalloc.get_traced_memory()[0] - base
        for recs in _records(ds):
            proc.process(recs)
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - base
        # the model's growth: a copy of the trained model less a copy of a new one
        copies = []
        sizes = []
        for model in (proc.model, first.model):
            at = tracemalloc.get_traced_memory()[0]
            copies.append(BehaviourModel.loads(model.dumps()))
            sizes.append(tracemalloc.get_traced_memory()[0] - at)
        model_growth = sizes[0] - sizes[1]
        del copies
    finally:
        tracemalloc.stop()
        gc.set_threshold(*saved)
    live += proc.native_bytes()  # the native heap: outside tracemalloc's view
    held = _held(proc)
    frozen = _frozen(proc)
    per: dict[bytes, list[tuple[bytes, bytes | None]]] = {}
    other: list[tuple[bytes, bytes | None]] = []
    for k, v in proc.take_changes():
        acct = next((k[-n:] for n in lengths if k[-n:] in ids), None)
        if acct is None:
            other.append((k, v))
        elif v is not None:
            per.setdefault(acct, []).append((k, v))
    if len(per) < 0.9 * held:
        raise RuntimeError(f"only {len(per)} of the {held} accounts held have changelog entries whose "
                           "key ends with the account id: the cloning in bench/restore.py must learn "
                           "the new key format")
    return Templates(per, other, held, live, empty, frozen, model_growth)


def idle_bytes(t: Templates) -> tuple[float, float]:
    """Memory per *idle* account, and the median frozen value: every template account frozen
    (:meth:`~consumers.core.features.AccountState.freeze`, as ``freeze_after_ms`` leaves an
    account a day without requests) in a table of account id -> frozen value like the account
    stage's, measured with tracemalloc (key, table entry and value)."""
    from collections import OrderedDict

    from consumers.core.features import AccountState

    frozen = []
    for acct, entries in t.accounts.items():
        for k, v in entries:
            if k.startswith(b"a:") and v is not None:
                lst = AccountState.load_value(v)
                blob = v if AccountState.is_frozen(lst) else AccountState.from_list(lst).freeze()
                frozen.append((acct, blob))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        table: OrderedDict[str, bytes] = OrderedDict()
        for acct, blob in frozen:
            table[acct.decode()] = blob
        size = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    n = max(1, len(table))
    values = sorted(len(b) for b in table.values())
    blob_bytes = sum(sys.getsizeof(b) for b in table.values())  # made before the table: added here
    return (size + blob_bytes) / n, float(values[len(values) // 2]) if values else 0.0


def clone_id(template: bytes, i: int) -> bytes:
    """A new account id for clone ``i``, as long as the template's (``acct_3259...`` → ``acct_c...``)."""
    tail = f"c{i:x}".encode()
    head = template.split(b"_", 1)[0] + b"_" if b"_" in template else b""
    pad = max(0, len(template) - len(head) - len(tail))
    return head + b"0" * pad + tail


def cloned_entries(t: Templates, n_accounts: int, start: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """The changelog entries of accounts ``start .. n_accounts - 1``: template ``i % T`` under
    :func:`clone_id` ``(template, i)``."""
    items = list(t.accounts.items())
    T = len(items)
    for i in range(start, n_accounts):
        acct, entries = items[i % T]
        new = clone_id(acct, i)
        for k, v in entries:
            yield k[:-len(acct)] + new, (v.replace(acct, new) if v is not None else v)  # type: ignore[misc]


def write_changelog(bootstrap: str, topic: str, t: Templates, n_accounts: int, marker: int,
                    log: Callable[[str], None] = lambda s: None) -> dict[str, float]:
    """Create ``topic`` (compacted, one partition) and write the clones' entries, the other
    entries and the offset marker ``marker``; returns seconds and bytes written."""
    from confluent_kafka import Producer

    from consumers.config import KafkaSettings
    from consumers.kafka.admin import changelog_spec, ensure_topics
    from consumers.kafka.changelog import OFFSET_MARKER_KEY, encode_marker

    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [changelog_spec(topic, 1)])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "compression.type": "lz4", "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.kbytes": 1024 * 1024,
                         "queue.buffering.max.messages": 1_000_000})
    errors: list[str] = []

    def on_delivery(err: Any, _m: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = nbytes = 0
    t0 = time.perf_counter()

    def send(k: bytes, v: bytes | None) -> None:
        while True:
            try:
                producer.produce(topic, v, k, partition=0, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.05)

    for k, v in cloned_entries(t, n_accounts):
        send(k, v)
        n += 1
        nbytes += len(k) + len(v or b"")
        if n % 10_000 == 0:
            producer.poll(0)
            if n % 200_000 == 0:
                log(f"restore: written {n:,} entries ({nbytes / 1e6:,.0f} MB)")
    for k, v in t.other:
        send(k, v)
    send(OFFSET_MARKER_KEY, encode_marker(marker))
    left = producer.flush(300)
    if left or errors:
        raise RuntimeError(f"writing {topic}: {left} undelivered, {len(errors)} errors "
                           f"{errors[:1]}")
    return {"seconds": time.perf_counter() - t0, "entries": n, "bytes": nbytes}


def account_chunks(entries: dict[bytes, bytes], t: Templates, chunk: int
                   ) -> Iterator[tuple[list[tuple[bytes, bytes]], int]]:
    """``(entries of up to chunk accounts + the stage's other entries, accounts)``, in log order.
    An entry's account is its key's last ``len(id)`` bytes (clone ids are as long as their
    templates')."""
    other_keys = {k for k, _ in t.other}
    other = [(k, v) for k, v in entries.items() if k in other_keys]
    id_len = len(next(iter(t.accounts)))
    part: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for k, v in entries.items():
        if k in other_keys:
            continue
        acct = k[-id_len:]
        if acct not in seen:
            if len(seen) == chunk:
                yield part + other, len(seen)
                part, seen = [], set()
            seen.add(acct)
        part.append((k, v))
    if seen:
        yield part + other, len(seen)


def restore_processors(entries: dict[bytes, bytes], t: Templates, chunk: int,
                       cfg: Any = None) -> dict[str, Any]:
    """``AccountProcessor.restore`` of the accounts read back, in chunks of ``chunk`` accounts
    (each with the stage's other entries) into fresh processors, timed and summed; the first chunk
    is restored once more under ``tracemalloc`` (not timed) for the memory per restored account.
    Checks that every processor holds exactly its chunk's accounts."""
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import DetectorConfig

    cfg = cfg or DetectorConfig()
    seconds = 0.0
    mem_per_account: float | None = None
    first_frozen: int | None = None
    chunks = restored = 0
    saved = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        for part, n_acc in account_chunks(entries, t, chunk):
            if mem_per_account is None:
                gc.collect()
                tracemalloc.start()
                try:
                    base = tracemalloc.get_traced_memory()[0]
                    proc = AccountProcessor(cfg, 0)
                    proc.restore(part)
                    gc.collect()
                    mem_per_account = (tracemalloc.get_traced_memory()[0] - base
                                       + proc.native_bytes()) / n_acc  # + the native heap
                    first_frozen = _frozen(proc)
                finally:
                    tracemalloc.stop()
                del proc
            gc.collect()
            t0 = time.perf_counter()
            proc = AccountProcessor(cfg, 0)
            proc.restore(part)
            seconds += time.perf_counter() - t0
            held = _held(proc)
            if held != n_acc:
                raise AssertionError(f"restored chunk {chunks}: the processor holds {held} accounts, "
                                     f"expected {n_acc}")
            chunks += 1
            restored += n_acc
            del proc, part
    finally:
        gc.set_threshold(*saved)
    return {"seconds": seconds, "bytes_per_restored_account": mem_per_account, "chunks": chunks,
            "accounts": restored, "first_chunk_frozen": first_frozen}


def run(ds: Dataset, bootstrap: str = "127.0.0.1:9092", accounts: int = 1_000_000,
        chunk: int = 50_000, broker: bool = True, cfg: Any = None,
        log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The ``restore`` section (without ``broker``: only the state sizes and the in-memory
    ``restore`` of the clones, no changelog topic)."""
    t = templates(ds, cfg)
    T = len(t.accounts)
    log(f"restore: {T:,} template accounts from {len(ds):,} events; "
        f"{t.bytes_per_account:,.0f} changelog bytes/account; cloning to {accounts:,} accounts")
    rows = [
        make_row(SECTION, "changelog bytes per account (key + value)", [t.bytes_per_account], "bytes/account",
                 f"{T:,} accounts after {len(ds):,} events of the data set"),
        make_row(SECTION, "memory per active account (tracemalloc + native, after processing)",
                 [t.active_bytes], "bytes/account",
                 f"AccountProcessor after the data set, less a new one "
                 f"({t.empty_bytes / 1e3:,.0f} KB: its model), ÷ {t.held:,} accounts held"
                 + (f" ({t.frozen:,} of them frozen)" if t.frozen is not None else "")),
        make_row(SECTION, "memory per active account, less the model's growth (tracemalloc + native)",
                 [t.marginal_bytes], "bytes/account",
                 f"the row above less what the behaviour model grew by learning ({t.model_growth / 1e3:,.0f} KB: "
                 f"a per-partition constant, its trees); issue #13 target: ≤ 4 KiB"),
    ]
    idle, idle_median = idle_bytes(t)
    rows.append(make_row(SECTION, "memory per idle (frozen) account (tracemalloc)", [idle], "bytes/account",
                         f"every template account frozen, in an id -> value table; frozen value median "
                         f"{idle_median:,.0f} B; issue #13 target: ≤ 512 B"))
    info: dict[str, Any] = {"templates": T, "events": len(ds), "accounts": accounts, "chunk": chunk,
                            "bytes_per_account": t.bytes_per_account,
                            "live_bytes_per_account": t.active_bytes,
                            "marginal_bytes_per_account": t.marginal_bytes,
                            "model_growth_bytes": t.model_growth,
                            "empty_processor_bytes": t.empty_bytes}
    if broker:
        from bench.kafka import check_broker, cleanup
        from consumers.config import KafkaSettings
        from consumers.kafka.changelog import read_changelog

        check_broker(bootstrap)
        prefix = f"dw-bench.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.restore."
        topic = f"{prefix}account-changelog"
        marker = 12345
        try:
            w = write_changelog(bootstrap, topic, t, accounts, marker, log)
            log(f"restore: wrote {w['entries']:,} entries ({w['bytes'] / 1e6:,.0f} MB) in {w['seconds']:.1f}s; "
                "reading back ...")
            t0 = time.perf_counter()
            res = read_changelog(KafkaSettings(bootstrap_servers=bootstrap), topic, {0: marker},
                                 group_id=f"{prefix}bench")[0]
            read_s = time.perf_counter() - t0
            if res.marker != marker:
                raise AssertionError(f"changelog read stopped at marker {res.marker}, expected {marker}")
            entries = res.entries
            info.update({"write": w, "read_s": read_s, "records_read": res.records})
        finally:
            info["cleanup"] = cleanup(bootstrap, prefix, [])
    else:
        entries = dict(cloned_entries(t, accounts))
        entries.update({k: v for k, v in t.other if v is not None})
        read_s = None
    log(f"restore: AccountProcessor.restore of {accounts:,} accounts in chunks of {chunk:,} ...")
    r = restore_processors(entries, t, chunk, cfg)
    del entries
    if r["accounts"] != accounts:
        raise AssertionError(f"restored {r['accounts']:,} accounts, wrote {accounts:,}")
    info.update({"restore": r})
    rows.append(make_row(SECTION, "memory per restored account (tracemalloc + native)", [r["bytes_per_restored_account"]],
                         "bytes/account", f"the first {min(chunk, accounts):,} restored accounts"
                         + (f" ({r['first_chunk_frozen']:,} of them frozen)"
                            if r.get("first_chunk_frozen") is not None else "")))
    scale = 1_000_000 / accounts
    what = "" if accounts == 1_000_000 else f" (measured on {accounts:,}, scaled ×{scale:.3g})"
    if read_s is not None:
        rows.append(make_row(SECTION, "changelog read of 1M accounts (read_changelog)" + what,
                             [read_s * scale], "s", f"{info['records_read']:,} records read, "
                             f"{info['write']['bytes'] / 1e6:,.0f} MB; read_committed, to the offset marker"))
    rows.append(make_row(SECTION, "AccountProcessor.restore of 1M accounts" + what, [r["seconds"] * scale], "s",
                         f"sum over {r['chunks']} chunks of {chunk:,} accounts, each into a fresh processor"))
    if read_s is not None:
        rows.append(make_row(SECTION, "restore of 1M accounts from the changelog (read + restore)" + what,
                             [(read_s + r["seconds"]) * scale], "s", "issue #13 target: ≤ 60 s"))
    return {"section": SECTION, "rows": rows, "info": info}
