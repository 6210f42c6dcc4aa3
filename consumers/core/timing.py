"""Synchronised timing: MinHash band keys of an account's set of active time slots.

SynchroTrap / CopyCatch look for accounts whose activity falls into the same time slots far more
often than chance. Here each account keeps a *slot window*: a bitmap of the last ``window_slots``
slots of ``slot_ms`` of event time in which it sent at least one request, packed with the number
of its newest slot into one int (:data:`SlotWindow`: 36 bytes for a 48-slot window of hours, 23
bytes of changelog JSON). At the end of each *epoch* (``epoch_ms``) the account stage asks
:meth:`SlotSketch.epoch_keys` for the band keys of its accounts' active slots in the window ending
there; accounts whose active slots coincide (Jaccard ``J`` of their slot sets) share a
band key with probability ``J ** rows`` per band, so the campaign stage, keyed by fingerprint,
sees them together whichever partition they live on.

What comes in: ``(ts_ms)`` per request, through :meth:`SlotSketch.mark` (event time only; a
request older than the window is ignored). What goes out: ``tim:<epoch>.<band>.<slots>`` keys,
where ``<slots>`` are the window positions of the ``rows`` MinHash minima of the band (so two
accounts share a key only for the same epoch, band and minima). No key for an account with fewer
than ``min_slots`` active slots (a few requests coincide by chance) or active in more than
``max_density`` of the window (a 24/7 client: every such account has the same set, which carries
no information).

Chance: MinHash with random permutations of the window's positions (seeded), so
P(two sets share a band) = J ** rows exactly, and P(share any of ``bands``) =
1 - (1 - J ** rows) ** bands. Busy slots make busy keys (people of one time zone keep the same
hours), so :meth:`SlotSketch.epoch_keys` keeps a key only when it is *rare by chance* under the
epoch population's slot occupancy (:meth:`SlotSketch.chance`, at most ``max_chance``). Whether a
key's accounts are unrelated is the campaign stage's business (``link_min_units`` /
``hot_units`` of kind ``tim``).

>>> sk = SlotSketch(slot_ms=3_600_000, window_slots=24, epoch_ms=6 * 3_600_000, bands=4, rows=2,
...                 min_slots=3, max_density=0.5, seed=7)
>>> sk
SlotSketch(slot_ms=3600000, window_slots=24, epoch_ms=21600000, bands=4, rows=2, min_slots=3, max_density=0.5, seed=7, max_chance=1.0, prior_accounts=20.0)
>>> H = 3_600_000
>>> a = b = 0                                 # 0: no window yet
>>> for h in (1, 5, 9, 13):                  # two accounts active in the same four hours
...     a = sk.mark(a, h * H + 60_000)
...     b = sk.mark(b, h * H + 1_800_000)
>>> sk.active(a, 24 * H)
4
>>> ka, kb = sk.keys(a, 24 * H), sk.keys(b, 24 * H)
>>> len(ka), ka == kb
(4, True)
>>> sk.keys(a, 48 * H)                        # a day later those hours left the window
[]
>>> sk.keys(a, 24 * H, since_ms=17 * H)       # 4 active of the 7 slots it existed in: too dense
[]
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

#: an account's slot window, one int: ``newest << window_slots | bitmap`` (bit k of the bitmap:
#: active in slot newest - k; the newest slot's bit is always set, so 0 means no window yet)
SlotWindow = int


def window_to_json(win: SlotWindow) -> int | str:
    """A slot window for the changelog: the int, or past 63 bits its hex (JSON ints are 64-bit).

    >>> window_to_json(5), window_to_json(1 << 70), window_from_json(window_to_json(1 << 70)) == 1 << 70
    (5, '400000000000000000', True)
    """
    return win if win < 1 << 63 else f"{win:x}"


def window_from_json(v: int | str | None) -> SlotWindow:
    """The inverse of :func:`window_to_json` (None: a state written before timing existed)."""
    if v is None:
        return 0
    return int(v, 16) if isinstance(v, str) else int(v)


class SlotSketch:
    """MinHash band keys of active time slots (see the module docstring).

    Parameters
    ----------
    slot_ms
        Width of a time slot (event time).
    window_slots
        Slots remembered per account and hashed per epoch (the window ends at the epoch's end).
    epoch_ms
        Keys are computed for the window ending at each multiple of ``epoch_ms``.
    bands, rows
        LSH: ``bands`` keys per account and epoch, each of ``rows`` MinHash minima.
    min_slots
        Fewer active slots in the window: no key.
    max_density
        Active in more than this share of the window: no key (round-the-clock clients all look
        alike).
    seed
        Seeds the permutations (the same on every partition: keys must meet).
    max_chance
        :meth:`epoch_keys` keeps a band key only when an account drawn from the epoch's population
        would get it with at most this probability (busy slots make busy keys).
    prior_accounts
        Pseudo-accounts of average occupancy added to each slot's count when :meth:`epoch_keys`
        estimates slot occupancy (a small population does not make a slot look empty).
    """

    def __init__(self, slot_ms: int, window_slots: int, epoch_ms: int, bands: int, rows: int,
                 min_slots: int, max_density: float, seed: int, max_chance: float = 1.0,
                 prior_accounts: float = 20.0):
        if window_slots > 4096 or window_slots < 1:
            raise ValueError("window_slots must be in 1..4096")
        self.slot_ms = slot_ms
        self.window_slots = window_slots
        self.epoch_ms = epoch_ms
        self.bands = bands
        self.rows = rows
        self.min_slots = min_slots
        self.max_density = max_density
        self.seed = seed
        self.max_chance = max_chance
        self.prior_accounts = prior_accounts
        rng = random.Random(seed)
        positions = list(range(window_slots))
        # one random permutation of the window's positions per MinHash function; the minimum of a
        # set under a permutation is the first position of the permutation's order in the set
        self._orders: list[list[int]] = []
        for _ in range(bands * rows):
            order = positions[:]
            rng.shuffle(order)
            self._orders.append(order)
        # per MinHash function, per position: the positions before it in the order (a set whose
        # minimum is that position has none of them)
        self._before: list[dict[int, int]] = []
        for order in self._orders:
            before, mask = {}, 0
            for p in order:
                before[p] = mask
                mask |= 1 << p
            self._before.append(before)
        self._full = (1 << window_slots) - 1
        self._width = 1 if window_slots <= 16 else 2 if window_slots <= 256 else 3

    def __repr__(self) -> str:
        return (f"SlotSketch(slot_ms={self.slot_ms}, window_slots={self.window_slots}, "
                f"epoch_ms={self.epoch_ms}, bands={self.bands}, rows={self.rows}, "
                f"min_slots={self.min_slots}, max_density={self.max_density}, seed={self.seed}, "
                f"max_chance={self.max_chance}, prior_accounts={self.prior_accounts})")

    def mark(self, win: SlotWindow, ts_ms: int) -> SlotWindow:
        """The window with the slot of ``ts_ms`` marked active.

        >>> sk = SlotSketch(600_000, 8, 3_600_000, 1, 1, 1, 1.0, 0)
        >>> w = sk.mark(0, 0)
        >>> w = sk.mark(w, 1_200_000)             # two slots later
        >>> sk.newest(w), bin(w & 255)
        (2, '0b101')
        >>> w2 = sk.mark(w, 9_000_000)            # 13 slots on: slot 0 slides out
        >>> sk.mark(w, 0) == w, sk.newest(w2), bin(w2 & 255)   # (slot 0 was marked already)
        (True, 15, '0b1')
        """
        slot = ts_ms // self.slot_ms
        n = self.window_slots
        if not win:
            return slot << n | 1
        top = win >> n
        if slot > top:
            return slot << n | (((win & self._full) << (slot - top)) | 1) & self._full
        back = top - slot
        if back >= n:
            return win
        return win | (1 << back)

    def newest(self, win: SlotWindow) -> int:
        """The window's newest active slot."""
        return win >> self.window_slots

    def _bits_until(self, win: SlotWindow, end_ms: int) -> int:
        """The bitmap of the window ending at ``end_ms`` (exclusive): bit p = active in slot
        ``end_slot - 1 - p``."""
        if not win:
            return 0
        top, bits = win >> self.window_slots, win & self._full
        end_slot = end_ms // self.slot_ms
        shift = end_slot - 1 - top
        if shift >= 0:
            return (bits << shift) & self._full if shift < self.window_slots else 0
        # slots at or after the window's end were marked: drop them
        return bits >> (-shift)

    def active(self, win: SlotWindow, end_ms: int) -> int:
        """Active slots in the window ending at ``end_ms``."""
        return self._bits_until(win, end_ms).bit_count()

    def eligible(self, win: SlotWindow, end_ms: int, since_ms: int | None = None) -> int:
        """The account's bitmap of the window ending at ``end_ms``, or 0 when it gets no key:
        under ``min_slots`` or over ``max_density``. ``since_ms``, the account's first request,
        makes the density relative to the part of the window the account existed in (a 24/7
        client that started an hour ago is dense already)."""
        bits = self._bits_until(win, end_ms)
        n = bits.bit_count()
        span = self.window_slots
        if since_ms is not None:
            span = max(1, min(span, end_ms // self.slot_ms - since_ms // self.slot_ms))
        if n < self.min_slots or n > self.max_density * span:
            return 0
        return bits

    def _minima(self, bits: int) -> list[int]:
        """The MinHash minimum (a window position) of the set under each permutation."""
        out = []
        for order in self._orders:
            for p in order:
                if bits >> p & 1:
                    out.append(p)
                    break
        return out

    def _key(self, epoch: int, band: int, minima: list[int]) -> str:
        w = self._width
        return f"tim:{epoch}.{band}." + "".join(f"{p:0{w}x}" for p in minima)

    def keys(self, win: SlotWindow, end_ms: int, since_ms: int | None = None) -> list[str]:
        """Every band key of one account's window ending at ``end_ms`` (see :meth:`eligible`),
        busy or not: :meth:`epoch_keys` is what the account stage announces."""
        bits = self.eligible(win, end_ms, since_ms)
        if not bits:
            return []
        mins = self._minima(bits)
        r = self.rows
        epoch = end_ms // self.epoch_ms
        return [self._key(epoch, b, mins[b * r:(b + 1) * r]) for b in range(self.bands)]

    def occupancy(self, bitmaps: list[int]) -> list[float]:
        """Per window position, the share of the population's (eligible) accounts active in it,
        pulled towards the average by ``prior_accounts`` pseudo-accounts.

        >>> sk = SlotSketch(1, 4, 1, 1, 1, 1, 1.0, 0, prior_accounts=0)
        >>> sk.occupancy([0b0011, 0b0001])
        [1.0, 0.5, 0.0, 0.0]
        """
        n = len(bitmaps)
        counts = [0] * self.window_slots
        for bits in bitmaps:
            while bits:
                low = bits & -bits
                counts[low.bit_length() - 1] += 1
                bits ^= low
        mean = sum(counts) / (n * self.window_slots) if n else 0.0
        a = self.prior_accounts
        return [(c + a * mean) / (n + a) if n + a else 0.0 for c in counts]

    def _masks(self, band: int, minima: list[int]) -> tuple[int, int]:
        """The positions a band key needs active (its minima) and idle (before them)."""
        need = empty = 0
        for j, p in zip(range(band * self.rows, (band + 1) * self.rows), minima, strict=True):
            need |= 1 << p
            empty |= self._before[j][p]
        return need, empty

    def chance(self, band: int, minima: list[int], occupancy: list[float]) -> float:
        """P(an account of the population gets this band key), its slots independent with the
        given occupancies: active in each minimum, idle in every position a permutation puts
        before its minimum.

        >>> sk = SlotSketch(1, 4, 1, 1, 1, 1, 1.0, 0)
        >>> sk._orders[0], round(sk.chance(0, [3], [0.5, 0.5, 0.5, 0.1]), 4)   # 2, 0, 1 idle, 3 active
        ([2, 0, 1, 3], 0.0125)
        """
        need, empty = self._masks(band, minima)
        if need & empty:
            return 0.0
        return math.exp(_LogTables(occupancy).log_chance(need, empty))

    def epoch_keys(self, windows: Sequence[tuple[str, SlotWindow, int | None]], end_ms: int
                   ) -> list[tuple[str, list[str]]]:
        """The band keys of a population's windows ending at ``end_ms``, each kept only when it is
        rare by chance (:meth:`chance` at most ``max_chance`` under the occupancy of the eligible
        windows: a coincidence in busy slots is no news). ``windows``: (account, window, first
        request) of the accounts active in the epoch; returns (account, keys) for those with a key,
        in the given order.
        """
        eligible = [(a, bits) for a, win, since in windows if (bits := self.eligible(win, end_ms, since))]
        if not eligible:
            return []
        tables = _LogTables(self.occupancy([bits for _, bits in eligible])) if self.max_chance < 1.0 else None
        limit = math.log(self.max_chance) if self.max_chance > 0.0 else -math.inf
        epoch = end_ms // self.epoch_ms
        r = self.rows
        out = []
        for acct, bits in eligible:
            mins = self._minima(bits)
            keys = []
            for b in range(self.bands):
                band = mins[b * r:(b + 1) * r]
                if tables is not None:
                    need, empty = self._masks(b, band)
                    if need & empty or tables.log_chance(need, empty) > limit:
                        continue
                keys.append(self._key(epoch, b, band))
            if keys:
                out.append((acct, keys))
        return out


    def chance_share(self, jaccard: float) -> float:
        """P(two accounts whose slot sets have this Jaccard similarity share a band key).

        >>> round(SlotSketch(3_600_000, 24, 1, 6, 3, 1, 1.0, 0).chance_share(0.5), 3)
        0.551
        """
        return 1.0 - (1.0 - jaccard ** self.rows) ** self.bands


class _LogTables:
    """Sums of log occupancy (active) and log(1 - occupancy) (idle) over any set of window
    positions, a byte of the bitmap at a time (one table lookup per byte instead of a loop over
    the positions: the chance of every key of every account is computed once per epoch)."""

    __slots__ = ("active", "idle")

    def __init__(self, occupancy: list[float]):
        def table(logs: list[float]) -> list[list[float]]:
            out = []
            for i in range(0, len(logs), 8):
                chunk = logs[i:i + 8]
                t = [0.0] * 256
                for v in range(1, 256):
                    low = (v & -v).bit_length() - 1
                    t[v] = t[v & (v - 1)] + (chunk[low] if low < len(chunk) else 0.0)
                out.append(t)
            return out
        self.active = table([math.log(o) if o > 0.0 else -1e9 for o in occupancy])
        self.idle = table([math.log1p(-o) if o < 1.0 else -1e9 for o in occupancy])

    def log_chance(self, need: int, empty: int) -> float:
        lp = 0.0
        for t in self.active:
            lp += t[need & 255]
            need >>= 8
        for t in self.idle:
            lp += t[empty & 255]
            empty >>= 8
        return lp
