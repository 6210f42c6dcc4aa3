"""The changelog layout: latest value per key in log order, offset markers, internal keys."""

from __future__ import annotations

from consumers.kafka.changelog import (
    OFFSET_MARKER_KEY,
    PartitionRestore,
    decode_marker,
    encode_marker,
    is_internal_key,
)


def test_partition_restore_keeps_latest_in_log_order() -> None:
    res = PartitionRestore()
    for key, value in [
        (b"a", b"1"),
        (b"b", b"1"),
        (OFFSET_MARKER_KEY, encode_marker(7)),
        (b"a", b"2"),  # a's latest write is now after b's
        (b"c", b"1"),
        (b"c", None),  # tombstone: c disappears
        (OFFSET_MARKER_KEY, encode_marker(12)),
    ]:
        res.add(key, value)
    assert list(res.entries.items()) == [(b"b", b"1"), (b"a", b"2")]
    assert res.marker == 12
    assert res.records == 7


def test_markers_and_internal_keys() -> None:
    assert decode_marker(encode_marker(123456789012)) == 123456789012
    assert decode_marker(b"") is None and decode_marker(b"x") is None
    assert is_internal_key(OFFSET_MARKER_KEY)
    assert not is_internal_key(b"acct-1") and not is_internal_key(None)
