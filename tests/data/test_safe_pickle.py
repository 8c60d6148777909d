"""The restricted unpickler: real numpy-bearing files load, anything executable is refused first."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from dartkit.data import safe_pickle
from dartkit.data.safe_pickle import safe_load, safe_loads
from dartkit.errors import DataError, UnsafePickleError

SYSTEM_GLOBAL = f"{os.system.__module__}.{os.system.__name__}"  # "posix.system" on Linux


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _plain_types(obj) -> set[type]:
    if isinstance(obj, (list, tuple)):
        return set().union(*(_plain_types(o) for o in obj)) if obj else set()
    return {type(obj)}


@pytest.mark.parametrize("benchmark", ["N2", "N4"])
def test_numpy_bearing_files_load_as_plain_python(raw_pkl_dir: Path, benchmark: str) -> None:
    diff, equal = safe_load(raw_pkl_dir / f"{benchmark}_1k.pkl")
    assert len(diff) == len(equal) == 1000
    # numpy scalars (np.int64 answers, np.str_ questions) come back as builtins.
    assert _plain_types([diff, equal]) <= {str, int}
    assert all(type(item[1]) is int for item in diff + equal)


def test_matches_plain_pickle_on_real_file(raw_pkl_dir: Path) -> None:
    path = raw_pkl_dir / "N4_1k.pkl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy 2 warns about the numpy.core spelling
        reference = pickle.loads(path.read_bytes())  # trusted copy, for comparison only
    ours = safe_load(path)
    assert ours == [[[q, int(a), s] for q, a, s in part] for part in reference]


def test_numpy2_spelling_is_also_accepted() -> None:
    data = pickle.dumps([np.int64(3), np.float64(0.5), np.str_("x"), np.bool_(True)], protocol=4)
    loaded = safe_loads(data, "fresh.pkl")
    assert loaded == [3, 0.5, "x", True]
    assert [type(v) for v in loaded] == [int, float, str, bool]


def test_os_system_is_refused_before_it_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([[["q", _RunsShell(f"touch {sentinel}"), 1]], []], protocol=4))
    with pytest.raises(UnsafePickleError) as info:
        safe_load(path)
    message = str(info.value)
    assert str(path) in message
    assert SYSTEM_GLOBAL in message
    assert not sentinel.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_refused_under_every_protocol(tmp_path: Path, protocol: int) -> None:
    sentinel = tmp_path / "SENTINEL"
    with pytest.raises(UnsafePickleError, match=SYSTEM_GLOBAL):
        safe_loads(pickle.dumps(_RunsShell(f"touch {sentinel}"), protocol=protocol), "evil.pkl")
    assert not sentinel.exists()


def test_builtins_eval_is_refused() -> None:
    data = b"cbuiltins\neval\n(S'__import__(\"os\").getcwd()'\ntR."
    with pytest.raises(UnsafePickleError, match=r"`builtins\.eval`"):
        safe_loads(data, "eval.pkl")


def test_numpy_arrays_are_not_on_the_allow_list() -> None:
    with pytest.raises(UnsafePickleError, match="numpy"):
        safe_loads(pickle.dumps(np.arange(3)), "array.pkl")


def test_object_dtype_scalar_is_refused() -> None:
    # A hand-built reduce of scalar(dtype('O'), ...) must not get through the allowed globals.
    data = (
        b"\x80\x04cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R"
        b"X\x01\x00\x00\x00x\x86R."
    )
    with pytest.raises(DataError, match="not a plain number or string type") as info:
        safe_loads(data, "objdtype.pkl")
    assert not isinstance(info.value, UnsafePickleError)
    assert "objdtype.pkl" in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "D1_1k.pkl"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"D1_1k\.pkl: empty file"):
        safe_load(path)


@pytest.mark.parametrize("keep", [1, 50, 5000, -1])
def test_truncated_real_file(raw_pkl_dir: Path, tmp_path: Path, keep: int) -> None:
    path = tmp_path / "N2_1k.pkl"
    path.write_bytes((raw_pkl_dir / "N2_1k.pkl").read_bytes()[:keep])
    with pytest.raises(DataError) as info:
        safe_load(path)
    assert str(path) in str(info.value)


def test_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "D1_1k.pkl"
    path.write_text("question,answer\nfoo,1\n")
    with pytest.raises(DataError, match=r"D1_1k\.pkl: not a valid pickle"):
        safe_load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        safe_load(tmp_path / "absent.pkl")


# GLOBAL numpy.core.multiarray.scalar; state (None, {"__defaults__": (7,)}); BUILD. On a plain function
# BUILD's slot state is setattr(), which would rewrite the module's allowed function for every later load.
_SET_DEFAULTS = b"cnumpy.core.multiarray\nscalar\nN}V__defaults__\n(I7\nts\x86b."
# GLOBAL numpy.dtype; state {"note": "x"}; BUILD: a dict state writes into the function's __dict__.
_SET_DICT = b"cnumpy\ndtype\n}Vnote\nVx\nsb."


@pytest.mark.parametrize(
    ("data", "name"),
    [(_SET_DEFAULTS, "numpy.core.multiarray.scalar"), (_SET_DICT, "numpy.dtype")],
    ids=["defaults", "dict"],
)
def test_build_on_an_allowed_global_is_refused(data: bytes, name: str) -> None:
    functions = list(safe_pickle.ALLOWED_GLOBALS.values())
    before = [(f.__defaults__, dict(f.__dict__)) for f in functions]
    try:
        with pytest.raises(UnsafePickleError, match=rf"build\.pkl: refusing to unpickle, .*`{name}` \(BUILD"):
            safe_loads(data, "build.pkl")
        assert [(f.__defaults__, dict(f.__dict__)) for f in functions] == before
    finally:  # never leave a poisoned allow-list behind for the other tests
        for f, (defaults, attributes) in zip(functions, before, strict=True):
            f.__defaults__ = defaults
            f.__dict__.clear()
            f.__dict__.update(attributes)


def test_real_files_still_load_after_a_refused_build(raw_pkl_dir: Path) -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(_SET_DEFAULTS, "build.pkl")
    diff, _ = safe_load(raw_pkl_dir / "N4_1k.pkl")
    assert len(diff) == 1000 and all(type(item[1]) is int for item in diff)
