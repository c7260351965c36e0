"""PyFlink must run its Cython (fast) operations: with a mismatched Apache Beam they fail to
import and PyFlink silently falls back to pure-Python coders and operations (several times
slower). This guards the pinned Beam version."""

import importlib


def test_pyflink_cython_operations_load() -> None:
    for module in ("pyflink.fn_execution.beam.beam_operations_fast",
                   "pyflink.fn_execution.coder_impl_fast"):
        importlib.import_module(module)  # raises if Beam does not match the compiled code
