//! Sets the `Py_3_*` cfgs of the interpreter being built for (maturin passes
//! it in `PYO3_PYTHON`), so the module declares per-interpreter-GIL support
//! on 3.12+ and free-threading support on 3.13+.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
