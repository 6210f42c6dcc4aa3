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
//!
//! `KeySet` answers exactly as `consumers.core.prompt_memory.PyKeySet`: the paraphrase keys an
//! account announced, 5 bytes each in insertion order.
//!
//! `check_event` is `consumers.contract.events.py_check_event` (RequestEvent v1's checks, the
//! same reasons in the same order; tests/unit/test_native.py compares them on mutated events).
//!
//! Both also derive a prompt's keys from its SimHash and spell the fingerprints they announce
//! (`use_hex`, `add_new_hex`), as `consumers.core.prompt_keys` does: one call per request instead
//! of a Python loop over keys and names.

use pyo3::prelude::*;
use pyo3::intern;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

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

/// A SimHash's 16 hex digits (either case) as its 64 bits.
fn parse_simhash(h: &str) -> PyResult<u64> {
    if h.len() != 16 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(pyo3::exceptions::PyValueError::new_err("a SimHash is 16 hex digits"));
    }
    u64::from_str_radix(h, 16).map_err(|_| pyo3::exceptions::PyValueError::new_err("a SimHash is 16 hex digits"))
}

/// `prompt_keys.prompt_key_ints`: the six pairs of the SimHash's four 16-bit blocks.
fn prompt_key_ints(v: u64) -> [u64; 6] {
    let hi = (v >> 48) << 16;
    let b1 = (v >> 32) & 0xFFFF;
    let b2 = (v >> 16) & 0xFFFF;
    let b3 = v & 0xFFFF;
    [
        v >> 32,
        1 << 32 | hi | b2,
        2 << 32 | hi | b3,
        3 << 32 | b1 << 16 | b2,
        4 << 32 | b1 << 16 | b3,
        5 << 32 | (v & 0xFFFF_FFFF),
    ]
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(out: &mut Vec<u8>, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xF) as usize]);
    }
}

/// `prompt_keys.prompt_key_name`, as bytes: `p<pair>:<8 hex digits>`.
fn prompt_key_name(k: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    out.push(b'p');
    out.push(b'0' + (k >> 32) as u8);
    out.push(b':');
    hex_into(&mut out, k & 0xFFFF_FFFF, 8);
    out
}

/// `prompt_keys.paraphrase_key_name`, as bytes: `q<x><y><z>:<6 hex digits>`.
fn paraphrase_key_name(k: u64) -> Vec<u8> {
    let w = k >> 24;
    let mut out = Vec::with_capacity(11);
    out.push(b'q');
    out.push(b'0' + (w >> 6) as u8);
    out.push(b'0' + ((w >> 3) & 7) as u8);
    out.push(b'0' + (w & 7) as u8);
    out.push(b':');
    hex_into(&mut out, k & 0xFF_FFFF, 6);
    out
}

/// `prompt_keys.paraphrase_key_ints`: 3 of the SimHash's 8 bytes a key, consistently sampled.
fn paraphrase_key_ints(v: u64, sample: u32) -> PyResult<Vec<u64>> {
    let mask: u32 = match sample {
        1 => 0,
        4 => 1,
        16 => 3,
        64 => 7,
        _ => return Err(pyo3::exceptions::PyValueError::new_err("sample must be 1, 4, 16 or 64")),
    };
    let b = v.to_be_bytes();
    let marked: Vec<usize> = (0..8).filter(|&i| ((b[i] as u32 * 167 + i as u32 * 89) >> 3) & mask == 0).collect();
    let mut out = Vec::new();
    for (n, &x) in marked.iter().enumerate() {
        let bx = (b[x] as u64) << 16;
        for &y in &marked[n + 1..] {
            let pre = ((x as u64) << 6 | (y as u64) << 3) << 24 | bx | (b[y] as u64) << 8;
            for z in y + 1..8 {
                out.push(pre | (z as u64) << 24 | b[z] as u64);
            }
        }
    }
    Ok(out)
}

fn names(py: Python<'_>, keys: &[u64], name: fn(u64) -> Vec<u8>) -> PyObject {
    PyList::new_bound(py, keys.iter().map(|&k| PyBytes::new_bound(py, &name(k)))).into()
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

    fn use_keys(&mut self, keys: [u64; 6], request: i64, mask: u64) -> (Vec<u64>, i64, bool) {
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
        (out, first, reused)
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
        let (out, first, reused) = self.use_keys(keys, request, mask);
        (PyList::new_bound(py, out).into(), first, reused)
    }

    /// See `PyPromptMemory.use_hex`: `use` of a SimHash's keys, the keys to announce spelled as
    /// the fingerprints they are (bytes).
    #[pyo3(signature = (simhash, request, mask=0xF))]
    fn use_hex(&mut self, py: Python<'_>, simhash: &str, request: i64, mask: u64) -> PyResult<(PyObject, i64, bool)> {
        let (out, first, reused) = self.use_keys(prompt_key_ints(parse_simhash(simhash)?), request, mask);
        Ok((names(py, &out, prompt_key_name), first, reused))
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

    /// `to_list` as JSON (the changelog writes it as it is, without a list of ints in between).
    fn to_json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        use std::io::Write;
        let n = self.store.len();
        let mut out: Vec<u8> = Vec::with_capacity(2 + 24 * n);
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            write!(out, "{},{}", self.store.key(i) as i64, self.store.val(i)).expect("write to a Vec");
        }
        out.push(b']');
        PyBytes::new_bound(py, &out)
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

/// A bounded set of 40-bit keys in insertion order, 5 bytes each (big-endian), as
/// `consumers.core.prompt_memory.PyKeySet`: past `capacity` keys, `trim` keeps the newest half.
#[pyclass(module = "consumers._native")]
pub struct KeySet {
    buf: Vec<u8>,
    #[pyo3(get)]
    capacity: usize,
}

impl KeySet {
    fn record(k: u64) -> PyResult<[u8; 5]> {
        if k >> 40 != 0 {
            return Err(pyo3::exceptions::PyOverflowError::new_err("a KeySet key has 40 bits"));
        }
        let b = k.to_be_bytes();
        Ok([b[3], b[4], b[5], b[6], b[7]])
    }

    fn holds(&self, r: &[u8; 5]) -> bool {
        self.buf.chunks_exact(5).any(|c| c == r)
    }

    fn insert_new(&mut self, keys: &[u64]) -> PyResult<Vec<u64>> {
        let mut new = Vec::new();
        for &k in keys {
            let r = KeySet::record(k)?;
            if !self.holds(&r) {
                if self.buf.len() == self.buf.capacity() {
                    self.buf.reserve_exact((self.buf.len() / 4).max(15));
                }
                self.buf.extend_from_slice(&r);
                new.push(k);
            }
        }
        Ok(new)
    }
}

#[pymethods]
impl KeySet {
    #[new]
    #[pyo3(signature = (capacity=128))]
    fn new(capacity: usize) -> Self {
        KeySet { buf: Vec::new(), capacity }
    }

    fn __contains__(&self, k: u64) -> PyResult<bool> {
        Ok(self.holds(&KeySet::record(k)?))
    }

    /// Add `k`; False if it was already there.
    fn add(&mut self, k: u64) -> PyResult<bool> {
        Ok(!self.insert_new(&[k])?.is_empty())
    }

    /// Add `keys`; return those that were not there yet, in order.
    fn add_new(&mut self, keys: Vec<u64>) -> PyResult<Vec<u64>> {
        self.insert_new(&keys)
    }

    /// `add_new` of a SimHash's paraphrase keys (`prompt_keys.paraphrase_key_ints`), the new ones
    /// spelled as the fingerprints they are (bytes).
    fn add_new_hex(&mut self, py: Python<'_>, simhash: &str, sample: u32) -> PyResult<PyObject> {
        let new = self.insert_new(&paraphrase_key_ints(parse_simhash(simhash)?, sample)?)?;
        Ok(names(py, &new, paraphrase_key_name))
    }

    /// Past `capacity` keys, keep the newest `capacity / 2`.
    fn trim(&mut self) {
        if self.buf.len() > 5 * self.capacity {
            let n = self.buf.len() - 5 * (self.capacity / 2);
            self.buf.drain(..n);
            self.buf.shrink_to(self.buf.len() + self.buf.len() / 4);
        }
    }

    fn __len__(&self) -> usize {
        self.buf.len() / 5
    }

    /// Heap bytes it holds (tracemalloc does not see them).
    fn nbytes(&self) -> usize {
        self.buf.capacity()
    }

    fn __sizeof__(&self) -> usize {
        std::mem::size_of::<Self>() + 16 + self.nbytes()
    }

    /// The keys' 5-byte records, oldest first (the changelog form, base64-encoded there).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new_bound(py, &self.buf)
    }

    #[staticmethod]
    #[pyo3(signature = (b, capacity=128))]
    fn from_bytes(b: &[u8], capacity: usize) -> PyResult<Self> {
        if b.len() % 5 != 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("from_bytes: not a run of 5-byte keys"));
        }
        Ok(KeySet { buf: b.to_vec(), capacity })
    }

    #[staticmethod]
    #[pyo3(signature = (keys, capacity=128))]
    fn from_keys(keys: Vec<u64>, capacity: usize) -> PyResult<Self> {
        let mut ks = KeySet::new(capacity);
        ks.insert_new(&keys)?;
        ks.trim();
        Ok(ks)
    }
}

const MAX_INT: i64 = i64::MAX;

/// An exact int (not a bool) within `lo..=hi`; an int beyond i64 is out of every range here.
fn int_in(v: &Bound<'_, PyAny>, lo: i64, hi: i64) -> bool {
    v.is_exact_instance_of::<PyInt>() && matches!(v.extract::<i64>(), Ok(x) if lo <= x && x <= hi)
}

/// An exact str of `lo..=hi` code points.
fn str_len_in(v: &Bound<'_, PyAny>, lo: usize, hi: usize) -> bool {
    v.is_exact_instance_of::<PyString>() && matches!(v.len(), Ok(n) if lo <= n && n <= hi)
}

/// An exact str of `n` ASCII characters each passing `ok`.
fn ascii_str(v: &Bound<'_, PyAny>, n: usize, ok: fn(&u8) -> bool) -> bool {
    match v.downcast_exact::<PyString>() {
        Ok(s) => matches!(s.to_str(), Ok(t) if t.len() == n && t.as_bytes().iter().all(ok)),
        Err(_) => false,
    }
}

/// `py_check_event`: why a decoded RequestEvent v1 (a dict) is invalid, or None. The task
/// category is not normalised here (the caller does it).
#[pyfunction]
fn check_event(ev: &Bound<'_, PyDict>) -> PyResult<Option<String>> {
    let py = ev.py();
    macro_rules! get {
        ($k:literal) => {
            match ev.get_item(intern!(py, $k))? {
                Some(v) => v,
                None => return Ok(Some(concat!($k, ": required field missing").to_string())),
            }
        };
    }
    macro_rules! fail {
        ($m:expr) => {
            return Ok(Some($m.to_string()))
        };
    }
    let v = get!("schema_version");
    if !int_in(&v, 1, 1) {
        fail!("schema_version: must be 1");
    }
    if !str_len_in(&get!("event_id"), 1, 64) {
        fail!("event_id: must be a string of 1-64 characters");
    }
    if !str_len_in(&get!("account_id"), 1, 128) {
        fail!("account_id: must be a string of 1-128 characters");
    }
    if !int_in(&get!("ts_ms"), 0, MAX_INT) {
        fail!("ts_ms: must be an integer >= 0");
    }
    if !int_in(&get!("account_created_ms"), 0, MAX_INT) {
        fail!("account_created_ms: must be an integer >= 0");
    }
    if !int_in(&get!("input_tokens"), 0, MAX_INT) {
        fail!("input_tokens: must be an integer >= 0");
    }
    if !int_in(&get!("output_tokens"), 0, MAX_INT) {
        fail!("output_tokens: must be an integer >= 0");
    }
    if !int_in(&get!("latency_ms"), 0, MAX_INT) {
        fail!("latency_ms: must be an integer >= 0");
    }
    macro_rules! nullable_str {
        ($k:literal) => {
            let v = get!($k);
            if !v.is_none() && !v.is_exact_instance_of::<PyString>() {
                fail!(concat!($k, ": must be a string or null"));
            }
        };
    }
    nullable_str!("org_id");
    nullable_str!("api_key_id");
    nullable_str!("payment_fingerprint");
    macro_rules! plain_str {
        ($k:literal) => {
            if !get!($k).is_exact_instance_of::<PyString>() {
                fail!(concat!($k, ": must be a string"));
            }
        };
    }
    plain_str!("account_tier");
    plain_str!("model");
    plain_str!("task_category");
    if !int_in(&get!("status"), -MAX_INT, MAX_INT) {
        fail!("status: must be an integer");
    }
    if !str_len_in(&get!("client_ip_prefix"), 1, 64) {
        fail!("client_ip_prefix: must be a string of 1-64 characters");
    }
    let v = get!("asn");
    if !v.is_none() && !int_in(&v, 0, MAX_INT) {
        fail!("asn: must be an integer >= 0 or null");
    }
    let v = get!("country");
    if !v.is_none() && !ascii_str(&v, 2, u8::is_ascii_alphabetic) {
        fail!("country: must be a 2-letter code or null");
    }
    let v = get!("user_agent");
    if !v.is_none() && !str_len_in(&v, 0, 512) {
        fail!("user_agent: must be a string of at most 512 characters or null");
    }
    if !ascii_str(&get!("prompt_simhash"), 16, u8::is_ascii_hexdigit) {
        fail!("prompt_simhash: must be 16 hex characters");
    }
    let v = get!("reasoning_elicitation");
    let ok = if v.is_exact_instance_of::<PyFloat>() {
        let x: f64 = v.extract()?;
        (0.0..=1.0).contains(&x)
    } else {
        int_in(&v, 0, 1)
    };
    if !ok {
        fail!("reasoning_elicitation: must be a number in [0, 1]");
    }
    if !get!("tool_use").is_exact_instance_of::<PyBool>() {
        fail!("tool_use: must be a boolean");
    }
    if !int_in(&get!("n_turns"), 1, MAX_INT) {
        fail!("n_turns: must be an integer >= 1");
    }
    Ok(None)
}

/// `prompt_keys.paraphrase_key_ints` (for the equivalence tests).
#[pyfunction]
#[pyo3(name = "paraphrase_key_ints")]
fn py_paraphrase_key_ints(simhash: &str, sample: u32) -> PyResult<Vec<u64>> {
    paraphrase_key_ints(parse_simhash(simhash)?, sample)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PromptMemory>()?;
    m.add_class::<KeySet>()?;
    m.add_function(wrap_pyfunction!(py_paraphrase_key_ints, m)?)?;
    m.add_function(wrap_pyfunction!(check_event, m)?)?;
    Ok(())
}
