"""The LSH keys of a prompt's SimHash, as ints and as the fingerprints the account stage announces.

* :func:`prompt_key_ints` — six keys, exact within 2 SimHash bits (near-duplicates);
* :func:`paraphrase_key_ints` — paraphrase-tolerant keys (3 of the 8 bytes each), consistently
  sampled;
* :func:`prompt_key_name` / :func:`paraphrase_key_name` — a key spelled as its fingerprint.

The native hot path (``native/src/lib.rs``: ``PromptMemory.use_hex``, ``KeySet.add_new_hex``)
derives and spells the same keys (tests/unit/test_native.py checks it against these).
"""

from __future__ import annotations


def prompt_key_ints(simhash_hex: str) -> tuple[int, int, int, int, int, int]:
    """LSH keys of a 64-bit SimHash: the six pairs of its four 16-bit blocks, as ints
    (``pair << 32 | the two blocks``; :func:`prompt_key_name` spells one as announced).

    Two SimHashes within 2 bits of each other share at least one key (pigeonhole: two flipped
    bits touch at most two blocks, leaving one whole pair); unrelated ones share a key with
    probability about 6 / 2**32.

    >>> a = prompt_key_ints("0123456789abcdef")
    >>> prompt_key_name(a[0]), prompt_key_name(a[5])
    ('p0:01234567', 'p5:89abcdef')
    >>> b = prompt_key_ints("0123456789ABCDEE")   # one bit away, other case
    >>> len(set(a) & set(b)) >= 1
    True
    """
    v = int(simhash_hex, 16)
    hi = (v >> 48) << 16         # block 0, in the upper half of a pair
    b1 = (v >> 32) & 0xFFFF
    b2 = (v >> 16) & 0xFFFF
    b3 = v & 0xFFFF
    return (v >> 32, 1 << 32 | hi | b2, 2 << 32 | hi | b3,
            3 << 32 | b1 << 16 | b2, 4 << 32 | b1 << 16 | b3, 5 << 32 | (v & 0xFFFFFFFF))


def prompt_key_name(k: int) -> str:
    """The fingerprint of a :func:`prompt_key_ints` key: ``p<pair>:<8 hex digits>``."""
    return _PROMPT_PREFIX[k >> 32] + "%08x" % (k & 0xFFFFFFFF)


def prompt_keys(simhash_hex: str) -> list[str]:
    """The fingerprints of :func:`prompt_key_ints`.

    >>> prompt_keys("0123456789abcdef")[:3]
    ['p0:01234567', 'p1:012389ab', 'p2:0123cdef']
    """
    return [prompt_key_name(k) for k in prompt_key_ints(simhash_hex)]


def paraphrase_key_ints(simhash_hex: str, sample: int) -> list[int]:
    """Paraphrase-tolerant LSH keys of a 64-bit SimHash, consistently sampled, as ints
    (``which 3 bytes << 24 | their 24 bits``; :func:`paraphrase_key_name` spells one).

    A key is 3 of the SimHash's 8 bytes (24 bits; which 3 is part of the key: 56 choices). A
    paraphrase that flips ``k`` bits of its template keeps every key whose bytes the flips missed
    (with 7 flipped bits, about 4% of them), so uses of one template by many accounts keep meeting
    on the template's own keys, where :func:`prompt_key_ints` (exact within 2 bits) loses them. The
    price is specificity: 24 bits collide by chance at scale, so the campaign stage only counts an
    account that shares *several* of them (``para_min_links``).

    Sampling keeps about ``1/sample`` of the keys (``sample`` = 1, 4, 16 or 64), the *same* keys
    for every account (a key is kept when its two first bytes are both marked, and a byte's mark
    depends only on its position and value), so accounts that use one template still meet.

    >>> ks = paraphrase_key_ints("0123456789abcdef", 1)
    >>> len(ks), paraphrase_key_name(ks[0])
    (56, 'q012:012345')
    >>> near = "0123456789abcd" + "ff"          # last byte changed: keys that avoid it survive
    >>> len(set(ks) & set(paraphrase_key_ints(near, 1)))
    35
    >>> set(paraphrase_key_ints("0123456789abcdef", 16)) <= set(ks)
    True
    """
    b = bytes.fromhex(simhash_hex)
    mark = _MARKS[sample]
    marked = [i for i in _BYTE_POS if mark[i][b[i]]]
    if len(marked) < 2:
        return []
    out = []
    for n, x in enumerate(marked):
        bx = b[x] << 16
        for y in marked[n + 1:]:
            pre = (x << 6 | y << 3) << 24 | bx | b[y] << 8
            for z in range(y + 1, 8):
                out.append(pre | z << 24 | b[z])
    return out


def paraphrase_key_name(k: int) -> str:
    """The fingerprint of a :func:`paraphrase_key_ints` key: ``q<x><y><z>:<6 hex digits>``."""
    return _PARA_PREFIX[k >> 24] + "%06x" % (k & 0xFFFFFF)


def paraphrase_keys(simhash_hex: str, sample: int) -> list[str]:
    """The fingerprints of :func:`paraphrase_key_ints`.

    >>> paraphrase_keys("0123456789abcdef", 1)[:2]
    ['q012:012345', 'q013:012367']
    """
    return [paraphrase_key_name(k) for k in paraphrase_key_ints(simhash_hex, sample)]


#: the spelling of a key's upper bits, looked up rather than formatted (once per announced key:
#: ~400k on ``day`` seed 7; with the lower bits through ``%``, not an f-string's format spec, a
#: name takes a third fewer instructions): prompt keys ``p<pair>:``, paraphrase keys ``q<x><y><z>:``
_PROMPT_PREFIX = [f"p{pair}:" for pair in range(6)]
_PARA_PREFIX = [f"q{w >> 6}{(w >> 3) & 7}{w & 7}:" for w in range(512)]

_BYTE_POS = range(8)
#: sample -> per byte position, per byte value: marked? (with probability 1/sqrt(sample))
_MARKS = {sample: [[not ((v * 167 + i * 89) >> 3) & mask for v in range(256)] for i in range(8)]
          for sample, mask in ((1, 0), (4, 1), (16, 3), (64, 7))}
