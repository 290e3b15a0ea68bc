"""The adapter: every call into TVM goes through this package.

TVM's Python API moves between releases (Relay -> Relax, Ansor -> MetaSchedule,
tvm.contrib -> tvm.support ...).  Keeping each call here, in a few small modules, means a
TVM upgrade touches this package only.  ``tests/test_structure.py`` checks that no
other module imports tvm.
"""

from __future__ import annotations


def tvm_version() -> str:
    import tvm
    return tvm.__version__


def ffi_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("apache-tvm-ffi")
    except PackageNotFoundError:
        return "unknown"
