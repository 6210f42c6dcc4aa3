//! `consumers._native`: the account stage's prompt memory in compact native storage.
//!
//! `PromptMemory` answers exactly as the pure-Python `consumers.core.prompt_memory.PyPromptMemory`
//! (the reference; tests/unit/test_native.py runs both on the same streams): an account's prompt
//! keys, each with the request of its template's first use (negative once announced), in order of
//! first use; past `capacity` keys the older half is forgotten. Keys and values live in two flat
//! arrays in insertion order (16 bytes a key, against ~90 for a Python dict of ints), found through
//! an open-addressing table of 4-byte indices once there are more than `SCAN_MAX` of them (a scan
//! below that).

use pyo3::prelude::*;
use pyo3::types::PyList;

const SCAN_MAX: usize = 24;

#[pyclass(module = "consumers._native")]
pub struct PromptMemory {
    keys: Vec<u64>,
    vals: Vec<i64>,
    table: Vec<u32>, // 0: empty, else index + 1; empty while keys.len() <= SCAN_MAX
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
            return self.keys.iter().position(|&x| x == k);
        }
        let mask = self.table.len() - 1;
        let mut h = slot(k, self.table.len().trailing_zeros());
        loop {
            let s = self.table[h];
            if s == 0 {
                return None;
            }
            let i = (s - 1) as usize;
            if self.keys[i] == k {
                return Some(i);
            }
            h = (h + 1) & mask;
        }
    }

    fn place(&mut self, i: usize) {
        let mask = self.table.len() - 1;
        let mut h = slot(self.keys[i], self.table.len().trailing_zeros());
        while self.table[h] != 0 {
            h = (h + 1) & mask;
        }
        self.table[h] = (i + 1) as u32;
    }

    fn rebuild(&mut self) {
        self.table = Vec::new();
        let n = self.keys.len();
        if n <= SCAN_MAX {
            return;
        }
        let size = (n * 10 / 7 + 1).next_power_of_two().max(64);
        self.table = vec![0u32; size];
        for i in 0..n {
            self.place(i);
        }
    }

    fn push(&mut self, k: u64, v: i64) {
        if self.keys.len() == self.keys.capacity() {
            // grow by a quarter, not double: a heavy account's arrays stay near their length
            let extra = (self.keys.len() / 4).max(6);
            self.keys.reserve_exact(extra);
            self.vals.reserve_exact(extra);
        }
        self.keys.push(k);
        self.vals.push(v);
        let n = self.keys.len();
        if n > SCAN_MAX {
            if self.table.is_empty() || n * 10 > self.table.len() * 7 {
                self.rebuild();
            } else {
                self.place(n - 1);
            }
        }
    }

    fn trim(&mut self) {
        let n = self.keys.len() - self.capacity / 2;
        self.keys.drain(..n);
        self.vals.drain(..n);
        let keep = self.keys.len() + self.keys.len() / 4;
        self.keys.shrink_to(keep);
        self.vals.shrink_to(keep);
        self.rebuild();
    }
}

#[pymethods]
impl PromptMemory {
    #[new]
    #[pyo3(signature = (capacity=512))]
    fn new(capacity: usize) -> Self {
        PromptMemory { keys: Vec::new(), vals: Vec::new(), table: Vec::new(), capacity }
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
                first = first.min(self.vals[j].abs());
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
                    let s = self.vals[j];
                    if s > 0 {
                        self.vals[j] = -s;
                        out.push(k);
                    }
                }
            }
        }
        if self.keys.len() > self.capacity {
            self.trim();
        }
        (PyList::new_bound(py, out).into(), first, reused)
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }

    /// Heap bytes it holds (tracemalloc does not see them).
    fn nbytes(&self) -> usize {
        self.keys.capacity() * 8 + self.vals.capacity() * 8 + self.table.capacity() * 4
    }

    fn __sizeof__(&self) -> usize {
        std::mem::size_of::<Self>() + 16 + self.nbytes()
    }

    /// `[key, first use, key, first use, ...]`, oldest first (the changelog form).
    fn to_list(&self) -> Vec<i64> {
        let mut v = Vec::with_capacity(2 * self.keys.len());
        for (k, s) in self.keys.iter().zip(self.vals.iter()) {
            v.push(*k as i64);
            v.push(*s);
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
        m.keys.reserve_exact(v.len() / 2);
        m.vals.reserve_exact(v.len() / 2);
        for c in v.chunks(2) {
            m.keys.push(c[0] as u64);
            m.vals.push(c[1]);
        }
        m.rebuild();
        Ok(m)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PromptMemory>()?;
    Ok(())
}
