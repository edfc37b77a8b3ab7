//! Bindings for [`crate::store`]: the `Store` class. Every call that takes a lock, waits
//! for the journal or does I/O runs with the interpreter detached (`py.detach`); arguments
//! are converted (and type-checked) before, results turned into Python objects after.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::errors::{Conflict, InvalidRecord, NotFound, StoreFailed};
use super::id::{ascii, id_arg, str_arg};
use crate::id::RxId;
use crate::store::{Store, StoreError, Submitted, SyncPolicy};

impl From<StoreError> for PyErr {
    fn from(e: StoreError) -> PyErr {
        let msg = e.to_string();
        match e {
            StoreError::NotFound(_) => NotFound::new_err(msg),
            StoreError::Conflict(_) => Conflict::new_err(msg),
            StoreError::Invalid { .. } => InvalidRecord::new_err(msg),
            StoreError::Failed { errno: Some(n), .. } => StoreFailed::new_err((n, msg)),
            StoreError::Failed { errno: None, .. } | StoreError::Corrupt { .. } => {
                StoreFailed::new_err(msg)
            }
        }
    }
}

/// JSON given as `bytes` or `str`.
fn json_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be bytes or str, not {}",
        obj.get_type().name()?
    )))
}

/// The arguments `dispense` and `dispense_submit` share, checked the same way.
fn dispense_args<'a>(
    rx_id: &Bound<'_, PyAny>,
    dispensation: &'a Bound<'_, PyAny>,
    idempotency_key: &'a Bound<'_, PyAny>,
    access_code: &'a Bound<'_, PyAny>,
) -> PyResult<(RxId, &'a [u8], &'a str, &'a str)> {
    Ok((
        id_arg(rx_id)?,
        json_arg(dispensation, "dispensation")?,
        str_arg(idempotency_key, "idempotency_key")?,
        str_arg(access_code, "access_code")?,
    ))
}

thread_local! {
    static GET_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
}

#[pyclass(name = "Store", module = "ordonum._core", frozen)]
pub struct PyStore(Store);

#[pymethods]
impl PyStore {
    #[staticmethod]
    #[pyo3(signature = (path, *, sync = "always", sync_delay_ms = 2))]
    fn open(py: Python<'_>, path: PathBuf, sync: &str, sync_delay_ms: u64) -> PyResult<Self> {
        let policy = match sync {
            "always" => SyncPolicy::Always,
            "delay" if (1..=10_000).contains(&sync_delay_ms) => {
                SyncPolicy::Delay(Duration::from_millis(sync_delay_ms))
            }
            "delay" => {
                return Err(PyValueError::new_err(format!(
                    "sync_delay_ms must be between 1 and 10000, got {sync_delay_ms}"
                )));
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "sync must be 'always' or 'delay', got {other:?}"
                )));
            }
        };
        Ok(PyStore(py.detach(|| Store::open(&path, policy))?))
    }

    #[staticmethod]
    fn memory() -> Self {
        PyStore(Store::memory())
    }

    #[pyo3(signature = (record, *, now_ms = None))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let json = json_arg(record, "record")?;
        let doc = py.detach(|| self.0.create(json, now_ms))?;
        Ok(PyBytes::new(py, &doc))
    }

    /// Many creations in one call: the GIL is released for the whole batch.
    #[pyo3(signature = (records, *, now_ms = None))]
    fn create_many(
        &self,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<usize> {
        let objs: Vec<Bound<'_, PyAny>> = records.try_iter()?.collect::<PyResult<_>>()?;
        let mut jsons: Vec<&[u8]> = Vec::with_capacity(objs.len());
        for (i, o) in objs.iter().enumerate() {
            jsons.push(json_arg(o, &format!("records[{i}]"))?);
        }
        Ok(py.detach(|| self.0.create_many(&jsons, now_ms))?)
    }

    #[pyo3(signature = (rx_id, *, now_ms = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = id_arg(rx_id)?;
        // The hot path: render into a per-thread buffer, copy once into the bytes object.
        GET_BUFFER.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            let out: &mut Vec<u8> = &mut buf;
            py.detach(|| self.0.get_into(&id, now_ms, out))?;
            Ok(PyBytes::new(py, out))
        })
    }

    /// Documents of many prescriptions in one call (`None` where there is none).
    #[pyo3(signature = (rx_ids, *, now_ms = None))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        rx_ids: &Bound<'py, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids: Vec<RxId> = rx_ids.try_iter()?.map(|o| id_arg(&o?)).collect::<PyResult<_>>()?;
        let docs: Vec<Option<Vec<u8>>> =
            py.detach(|| ids.iter().map(|id| self.0.get(id, now_ms).ok()).collect());
        PyList::new(py, docs.iter().map(|d| d.as_deref().map(|b| PyBytes::new(py, b))))
    }

    #[pyo3(signature = (rx_id, access_code, *, actor, now_ms = None))]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
        access_code: &Bound<'py, PyAny>,
        actor: &Bound<'py, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = id_arg(rx_id)?;
        let code = str_arg(access_code, "access_code")?;
        let actor = str_arg(actor, "actor")?;
        // Costs microseconds (no journal wait): fine to call from an event loop.
        GET_BUFFER.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            let out: &mut Vec<u8> = &mut buf;
            py.detach(|| self.0.scan_into(&id, code, actor, now_ms, out))?;
            Ok(PyBytes::new(py, out))
        })
    }

    #[pyo3(signature = (rx_id, dispensation, *, idempotency_key, access_code, now_ms = None))]
    fn dispense<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
        dispensation: &Bound<'py, PyAny>,
        idempotency_key: &Bound<'py, PyAny>,
        access_code: &Bound<'py, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (id, json, key, code) =
            dispense_args(rx_id, dispensation, idempotency_key, access_code)?;
        let answer = py.detach(|| self.0.dispense(&id, json, key, code, now_ms))?;
        Ok(PyBytes::new(py, &answer))
    }

    /// `dispense` without blocking: `(answer, lsn)` (send the answer once `lsn` is durable;
    /// 0: now), or `None` when another write of the prescription is in flight.
    #[pyo3(signature = (rx_id, dispensation, *, idempotency_key, access_code, now_ms = None))]
    fn dispense_submit<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
        dispensation: &Bound<'py, PyAny>,
        idempotency_key: &Bound<'py, PyAny>,
        access_code: &Bound<'py, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, u64)>> {
        let (id, json, key, code) =
            dispense_args(rx_id, dispensation, idempotency_key, access_code)?;
        Ok(match py.detach(|| self.0.dispense_submit(&id, json, key, code, now_ms))? {
            Submitted::Done(answer) => Some((PyBytes::new(py, &answer), 0)),
            Submitted::Queued(answer, lsn) => Some((PyBytes::new(py, &answer), lsn)),
            Submitted::Busy => None,
        })
    }

    /// `create` without blocking: `(id, lsn)`; the prescription is visible (`get`) once
    /// `lsn` is durable.
    #[pyo3(signature = (record, *, now_ms = None))]
    fn create_submit(
        &self,
        py: Python<'_>,
        record: &Bound<'_, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<(String, u64)> {
        let json = json_arg(record, "record")?;
        let (id, lsn) = py.detach(|| self.0.create_submit(json, now_ms))?;
        Ok((id.text(), lsn))
    }

    /// Blocks (GIL released) until `lsn` is durable and applied.
    fn wait(&self, py: Python<'_>, lsn: u64) -> PyResult<()> {
        Ok(py.detach(|| self.0.wait(lsn))?)
    }

    /// The highest durable, applied LSN (also after a journal failure).
    fn durable_lsn(&self) -> u64 {
        self.0.durable_lsn()
    }

    /// A non-blocking fd readable whenever `durable_lsn()` may have moved (`None` in memory).
    fn wake_fd(&self) -> Option<i32> {
        self.0.wake_fd()
    }

    #[pyo3(signature = (rx_id, *, prescriber_rpps, now_ms = None))]
    fn cancel(
        &self,
        py: Python<'_>,
        rx_id: &Bound<'_, PyAny>,
        prescriber_rpps: &Bound<'_, PyAny>,
        now_ms: Option<u64>,
    ) -> PyResult<&'static str> {
        let id = id_arg(rx_id)?;
        let rpps = str_arg(prescriber_rpps, "prescriber_rpps")?;
        Ok(py.detach(|| self.0.cancel(&id, rpps, now_ms))?.name())
    }

    #[pyo3(signature = (rx_id, allowed, *, now_ms = None))]
    fn set_consent(
        &self,
        py: Python<'_>,
        rx_id: &Bound<'_, PyAny>,
        allowed: bool,
        now_ms: Option<u64>,
    ) -> PyResult<()> {
        let id = id_arg(rx_id)?;
        Ok(py.detach(|| self.0.set_consent(&id, allowed, now_ms))?)
    }

    fn owner<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let id = id_arg(rx_id)?;
        let (rpps, nir, consent) = py.detach(|| self.0.owner(&id))?;
        (rpps, nir, consent).into_pyobject(py)
    }

    fn qr_token(&self, py: Python<'_>, rx_id: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let id = id_arg(rx_id)?;
        Ok(py.detach(|| self.0.qr_token(&id))?)
    }

    fn dispensations<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = id_arg(rx_id)?;
        let doc = py.detach(|| self.0.dispensations(&id))?;
        Ok(PyBytes::new(py, &doc))
    }

    #[pyo3(signature = (nir, *, limit = 50, before = None))]
    fn by_patient<'py>(
        &self,
        py: Python<'py>,
        nir: &Bound<'py, PyAny>,
        limit: usize,
        before: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let nir = str_arg(nir, "nir")?;
        let before = before.map(id_arg).transpose()?;
        let ids = py.detach(|| self.0.by_patient(nir, limit, before))?;
        PyList::new(py, ids.iter().map(|id| ascii(py, &id.text_bytes())))
    }

    fn access_log<'py>(
        &self,
        py: Python<'py>,
        rx_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let id = id_arg(rx_id)?;
        let doc = py.detach(|| self.0.access_log(&id))?;
        Ok(PyBytes::new(py, &doc))
    }

    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.0.checkpoint())?)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.0.close())?)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.detach(|| self.0.stats());
        let d = PyDict::new(py);
        for (k, v) in stats {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    Ok(())
}
