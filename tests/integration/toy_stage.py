"""A toy stage for the runner's integration tests: a running count per key.

Input ``"in"``: values ``b"<key>:<n>"`` (the message key is the same ``<key>``). For each input
the processor increments the count of ``<key>`` and emits ``"<key>:<count>"`` to ``"out"``
(keyed by ``<key>``). The value ``b"bad"`` goes unchanged to ``"dlq"`` with a ``dlq.error``
header. The value ``b"boom"`` makes :class:`CountProcessor` raise (a simulated bug) when
``fail_on_boom`` is true, and is sent to the DLQ otherwise.

State: changelog key = ``<key>``, value = the count as ASCII decimal.

Specs for ``distillwatch run-stage --spec tests.integration.toy_stage:SPEC``:
:data:`SPEC` (fails on ``boom``) and :data:`SPEC_NO_BOOM`.
"""

from __future__ import annotations

from collections.abc import Iterable

from consumers.core.stage import Record, StageSpec


class CountProcessor:
    """Counts per key; one instance per input partition."""

    def __init__(self, partition: int, fail_on_boom: bool = True) -> None:
        self.partition = partition
        self.fail_on_boom = fail_on_boom
        self.counts: dict[bytes, int] = {}
        self._dirty: set[bytes] = set()

    def process(self, records: list[Record]) -> list[Record]:
        out: list[Record] = []
        counts = self.counts
        for r in records:
            value = r.value
            if value == b"bad" or (value == b"boom" and not self.fail_on_boom):
                out.append(
                    Record(
                        "dlq",
                        r.key,
                        value,
                        headers=[
                            ("dlq.error", b"not a key:n value"),
                            ("dlq.partition", str(r.partition).encode()),
                            ("dlq.offset", str(r.offset).encode()),
                        ],
                    )
                )
                continue
            if value == b"boom":
                raise RuntimeError(f"boom at partition {r.partition} offset {r.offset}")
            key = value.split(b":", 1)[0]
            c = counts.get(key, 0) + 1
            counts[key] = c
            self._dirty.add(key)
            out.append(Record("out", key, key + b":" + str(c).encode()))
        return out

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        changes = [(k, str(self.counts[k]).encode()) for k in sorted(self._dirty)]
        self._dirty.clear()
        return changes

    def restore(self, entries: Iterable[tuple[bytes, bytes | None]]) -> None:
        for k, v in entries:
            if v is None:
                self.counts.pop(k, None)
            else:
                self.counts[k] = int(v)


def make_spec(fail_on_boom: bool = True) -> StageSpec:
    """The toy stage's spec."""

    def factory(partition: int) -> CountProcessor:
        return CountProcessor(partition, fail_on_boom=fail_on_boom)

    return StageSpec(name="toy", inputs=("in",), outputs=("out", "dlq"), factory=factory)


SPEC = make_spec(fail_on_boom=True)
SPEC_NO_BOOM = make_spec(fail_on_boom=False)
