//! `consumers._native`: the account stage's prompt memory in compact native storage.
//!
//! `PromptMemory` answers exactly as the pure-Python `consumers.core.prompt_memory.PyPromptMemory`
//! (the reference; tests/unit/test_native.py runs both on the same streams): an account's prompt
//! keys, each with the request of its template's first use (negative once announced), in order of
//! first use; past `capacity` keys the older half is forgotten.
//!
//! Storage, in insertion order: one `u64` a key — the key's 35 bits (a pair number and 32 bits),
//! an "announced" bit and the first use's 28 bits — so 8 bytes a key, against ~90 for a Python
//! dict of ints. A key or a request number that does not fit (a request past 2^28 - 1, a key
//! from a foreign changelog) moves the memory to the *wide* layout, a `u64` key and an `i64`
//! value each, and the answers stay exact. Past `SCAN_MAX` keys, lookups go through an
//! open-addressing table of 2-byte indices (a scan below that).

use pyo3::prelude::*;
use pyo3::types::PyList;

const SCAN_MAX: usize = 24;
const KEY_BITS: u32 = 35;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;
const ANNOUNCED: u64 = 1 << KEY_BITS;
const VAL_SHIFT: u32 = KEY_BITS + 1;
const VAL_MAX: u64 = (1 << (64 - VAL_SHIFT)) - 1;
/// table slots hold index + 1 in a u16: past this many keys, lookups scan
const TABLE_MAX: usize = u16::MAX as usize - 1;

/// Keys and first uses in insertion order (see the module docs).
enum Store {
    /// key | announced << 35 | |first use| << 36
    Narrow(Vec<u64>),
    /// keys, first uses
    Wide(Vec<u64>, Vec<i64>),
}

#[inline]
fn pack(k: u64, v: i64) -> Option<u64> {
    let a = v.unsigned_abs();
    if k > KEY_MASK || a > VAL_MAX {
        return None;
    }
    Some(k | if v < 0 { ANNOUNCED } else { 0 } | a << VAL_SHIFT)
}

#[inline]
fn unpack_val(e: u64) -> i64 {
    let a = (e >> VAL_SHIFT) as i64;
    if e & ANNOUNCED != 0 {
        -a
    } else {
        a
    }
}

impl Store {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Store::Narrow(e) => e.len(),
            Store::Wide(k, _) => k.len(),
        }
    }

    #[inline]
    fn key(&self, i: usize) -> u64 {
        match self {
            Store::Narrow(e) => e[i] & KEY_MASK,
            Store::Wide(k, _) => k[i],
        }
    }

    #[inline]
    fn val(&self, i: usize) -> i64 {
        match self {
            Store::Narrow(e) => unpack_val(e[i]),
            Store::Wide(_, v) => v[i],
        }
    }

    /// Make the layout wide (exact for any key and value).
    fn widen(&mut self) {
        if let Store::Narrow(e) = self {
            let keys = e.iter().map(|&x| x & KEY_MASK).collect();
            let vals = e.iter().map(|&x| unpack_val(x)).collect();
            *self = Store::Wide(keys, vals);
        }
    }

    fn set_val(&mut self, i: usize, v: i64) {
        if let Store::Narrow(e) = self {
            match pack(e[i] & KEY_MASK, v) {
                Some(x) => {
                    e[i] = x;
                    return;
                }
                None => self.widen(),
            }
        }
        if let Store::Wide(_, vals) = self {
            vals[i] = v;
        }
    }

    fn push(&mut self, k: u64, v: i64) {
        if let Store::Narrow(e) = self {
            match pack(k, v) {
                Some(x) => {
                    if e.len() == e.capacity() {
                        // grow by a quarter, not double: a heavy account's array stays near its length
                        e.reserve_exact((e.len() / 4).max(6));
                    }
                    e.push(x);
                    return;
                }
                None => self.widen(),
            }
        }
        if let Store::Wide(keys, vals) = self {
            if keys.len() == keys.capacity() {
                let extra = (keys.len() / 4).max(6);
                keys.reserve_exact(extra);
                vals.reserve_exact(extra);
            }
            keys.push(k);
            vals.push(v);
        }
    }

    /// Forget the oldest `n`, keeping room for a quarter more than what is left.
    fn drop_oldest(&mut self, n: usize) {
        match self {
            Store::Narrow(e) => {
                e.drain(..n);
                e.shrink_to(e.len() + e.len() / 4);
            }
            Store::Wide(k, v) => {
                k.drain(..n);
                v.drain(..n);
                k.shrink_to(k.len() + k.len() / 4);
                v.shrink_to(v.len() + v.len() / 4);
            }
        }
    }

    fn nbytes(&self) -> usize {
        match self {
            Store::Narrow(e) => e.capacity() * 8,
            Store::Wide(k, v) => k.capacity() * 8 + v.capacity() * 8,
        }
    }
}

#[pyclass(module = "consumers._native")]
pub struct PromptMemory {
    store: Store,
    table: Vec<u16>, // 0: empty, else index + 1; empty while there are <= SCAN_MAX keys
    #[pyo3(get)]
    capacity: usize,
}

#[inline]
fn slot(k: u64, bits: u32) -> usize {
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

impl PromptMemory {
    fn find(&self, k: u64) -> Option<usize> {
        if self.table.is_empty() {
            return (0..self.store.len()).find(|&i| self.store.key(i) == k);
        }
        let mask = self.table.len() - 1;
        let mut h = slot(k, self.table.len().trailing_zeros());
        loop {
            let s = self.table[h];
            if s == 0 {
                return None;
            }
            let i = (s - 1) as usize;
            if self.store.key(i) == k {
                return Some(i);
            }
            h = (h + 1) & mask;
        }
    }

    fn place(&mut self, i: usize) {
        let mask = self.table.len() - 1;
        let mut h = slot(self.store.key(i), self.table.len().trailing_zeros());
        while self.table[h] != 0 {
            h = (h + 1) & mask;
        }
        self.table[h] = (i + 1) as u16;
    }

    fn rebuild(&mut self) {
        self.table = Vec::new();
        let n = self.store.len();
        if n <= SCAN_MAX || n > TABLE_MAX {
            return;
        }
        let size = (n * 10 / 7 + 1).next_power_of_two().max(64);
        self.table = vec![0u16; size];
        for i in 0..n {
            self.place(i);
        }
    }

    fn push(&mut self, k: u64, v: i64) {
        self.store.push(k, v);
        let n = self.store.len();
        if n > SCAN_MAX {
            if self.table.is_empty() || n * 10 > self.table.len() * 7 {
                self.rebuild();
            } else {
                self.place(n - 1);
            }
        }
    }

    fn trim(&mut self) {
        let n = self.store.len() - self.capacity / 2;
        self.store.drop_oldest(n);
        self.rebuild();
    }
}

#[pymethods]
impl PromptMemory {
    #[new]
    #[pyo3(signature = (capacity=512))]
    fn new(capacity: usize) -> Self {
        PromptMemory { store: Store::Narrow(Vec::new()), table: Vec::new(), capacity }
    }

    /// See `PyPromptMemory.use`: the keys to announce now, the template's first use, whether the
    /// prompt reuses a remembered key.
    #[pyo3(signature = (keys, request, mask=0xF))]
    fn r#use(&mut self, py: Python<'_>, keys: [u64; 6], request: i64, mask: u64) -> (PyObject, i64, bool) {
        let mut at: [Option<usize>; 6] = [None; 6];
        let mut first = i64::MAX;
        for (i, &k) in keys.iter().enumerate() {
            if let Some(j) = self.find(k) {
                at[i] = Some(j);
                first = first.min(self.store.val(j).abs());
            }
        }
        let reused = first != i64::MAX;
        if !reused {
            first = request;
        }
        let mut out: Vec<u64> = Vec::new();
        for (i, &k) in keys.iter().enumerate() {
            match at[i] {
                None => {
                    if k & mask != 0 {
                        self.push(k, first);
                    } else {
                        self.push(k, -first);
                        out.push(k);
                    }
                }
                Some(j) => {
                    let s = self.store.val(j);
                    if s > 0 {
                        self.store.set_val(j, -s);
                        out.push(k);
                    }
                }
            }
        }
        if self.store.len() > self.capacity {
            self.trim();
        }
        (PyList::new_bound(py, out).into(), first, reused)
    }

    fn __len__(&self) -> usize {
        self.store.len()
    }

    /// Heap bytes it holds (tracemalloc does not see them).
    fn nbytes(&self) -> usize {
        self.store.nbytes() + self.table.capacity() * 2
    }

    fn __sizeof__(&self) -> usize {
        std::mem::size_of::<Self>() + 16 + self.nbytes()
    }

    /// `[key, first use, key, first use, ...]`, oldest first (the changelog form).
    fn to_list(&self) -> Vec<i64> {
        let n = self.store.len();
        let mut v = Vec::with_capacity(2 * n);
        for i in 0..n {
            v.push(self.store.key(i) as i64);
            v.push(self.store.val(i));
        }
        v
    }

    #[staticmethod]
    #[pyo3(signature = (v, capacity=512))]
    fn from_list(v: Vec<i64>, capacity: usize) -> PyResult<Self> {
        if v.len() % 2 != 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("from_list: an odd number of items"));
        }
        let mut m = PromptMemory::new(capacity);
        let packed: Option<Vec<u64>> = v.chunks(2).map(|c| pack(c[0] as u64, c[1])).collect();
        m.store = match packed {
            Some(e) => Store::Narrow(e),
            None => Store::Wide(v.iter().step_by(2).map(|&k| k as u64).collect(),
                                v.iter().skip(1).step_by(2).copied().collect()),
        };
        m.rebuild();
        Ok(m)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PromptMemory>()?;
    Ok(())
}
