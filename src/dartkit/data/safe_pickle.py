"""Restricted unpickling for the upstream benchmark files.

The Wang et al. 2025 suite ships as Python pickles, and a pickle can name any
importable callable (``os.system``, ``builtins.eval``) and have it called while
loading. Users hand us these files, so they are read with an unpickler that
resolves only the numpy globals the real files use and refuses everything else
at the moment the global is looked up, before any call happens. The allowed
globals are handed out as fresh wrappers that refuse BUILD, so a pickle cannot
change them either (for example rewrite a function's ``__defaults__``).

Example::

    from dartkit.data.safe_pickle import safe_load
    diff, equal = safe_load(Path("D1_1k.pkl"))
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dartkit.errors import DataError, UnsafePickleError

# numpy 2 moved numpy.core to numpy._core; the shim at numpy.core warns on
# import, so reach the real module under whichever name this numpy has.
try:
    _multiarray = importlib.import_module("numpy._core.multiarray")
except ImportError:  # pragma: no cover - numpy < 1.26
    _multiarray = importlib.import_module("numpy.core.multiarray")

# Scalar kinds that come back as plain bool / int / float / str. Object, void
# and datetime kinds are refused even though numpy could rebuild them.
_PLAIN_KINDS = frozenset("biufU")


def _checked_dtype(spec: Any, *args: Any) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy.dtype called with a {type(spec).__name__}, expected a type code")
    dtype = np.dtype(spec, *args)
    if dtype.kind not in _PLAIN_KINDS or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy dtype {dtype.str!r} is not a plain number or string type")
    return dtype


def _plain_scalar(dtype: Any, data: Any = None) -> bool | int | float | str:
    # Re-checked here because BUILD may have altered the dtype after _checked_dtype made it.
    if not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or dtype.hasobject:
        raise pickle.UnpicklingError("numpy scalar with a non-plain dtype")
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar without a raw byte buffer")
    return _multiarray.scalar(dtype, data).item()


# Exactly the globals N2_1k.pkl and N4_1k.pkl name (numpy 1.x spelling), plus the
# numpy 2 spelling of the same function so re-saved copies still load.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "scalar"): _plain_scalar,
    ("numpy._core.multiarray", "scalar"): _plain_scalar,
    ("numpy", "dtype"): _checked_dtype,
}


class _AllowedGlobal:
    """An allowed global as the unpickler hands it out: it can be called, but holds no state a pickle can set.

    BUILD (the opcode that sets an object's state or attributes) on a plain
    function would write straight into the module's function, for every later
    load; here it calls :meth:`__setstate__`, which refuses. Each lookup gets
    its own wrapper, and the wrapper has no ``__dict__`` and rejects attribute
    assignment, so nothing a file does to it can outlive that file.
    """

    __slots__ = ("_function", "_name", "_source")

    def __init__(self, function: Any, name: str, source: str) -> None:
        object.__setattr__(self, "_function", function)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_source", source)

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(
            f"{self._source}: refusing to unpickle, it tries to change the allowed global `{self._name}` "
            "(BUILD on a function); only lists, tuples, dicts, str, int, float, bool, None and numpy scalars "
            "are allowed"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"`{self._name}` is read-only while unpickling")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"`{self._name}` is read-only while unpickling")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: Binary file object holding the pickle.
        source: Name used in error messages (usually the file path).
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return a fresh read-only wrapper of the allowed stand-in for ``module.name``, or raise UnsafePickleError."""
        try:
            return _AllowedGlobal(ALLOWED_GLOBALS[(module, name)], f"{module}.{name}", self._source)
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle, it names the global `{module}.{name}`, which is not "
                "allowed (only lists, tuples, dicts, str, int, float, bool, None and numpy scalars are); "
                "nothing in the file was executed"
            ) from None


def _to_plain(value: Any, source: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in _PLAIN_KINDS:
        return value.item()
    if isinstance(value, list):
        return [_to_plain(v, source) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_plain(v, source) for v in value)
    if isinstance(value, dict):
        return {_to_plain(k, source): _to_plain(v, source) for k, v in value.items()}
    raise DataError(
        f"{source}: unexpected {type(value).__module__}.{type(value).__name__} object in the pickle"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle bytes with the restricted unpickler.

    Args:
        data: The pickle bytes.
        source: Name of where the bytes came from, for error messages.

    Returns:
        The unpickled object, with numpy scalars turned into Python values.

    Raises:
        UnsafePickleError: The pickle names a global outside the allow-list.
        DataError: The bytes are empty, truncated or not a pickle.
    """
    if not data:
        raise DataError(f"{source}: empty file, expected a pickle")
    try:
        loaded = RestrictedUnpickler(io.BytesIO(data), source=source).load()
        return _to_plain(loaded, source)
    except DataError:
        raise
    except EOFError:
        raise DataError(f"{source}: truncated pickle (ended before its STOP opcode)") from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise DataError(f"{source}: truncated pickle (ended before its STOP opcode)") from None
        raise DataError(f"{source}: not a valid pickle ({_one_line(exc)})") from None
    except RecursionError:
        raise DataError(f"{source}: pickle nests too deeply") from None
    except Exception as exc:  # the C unpickler raises many types on garbage input
        raise DataError(f"{source}: not a valid pickle ({type(exc).__name__}: {_one_line(exc)})") from None


def safe_load(path: Path) -> Any:
    """Read and unpickle a file with the restricted unpickler.

    Args:
        path: Pickle file a user handed us.

    Returns:
        The unpickled object, with numpy scalars turned into Python values.

    Raises:
        UnsafePickleError: The file names a global outside the allow-list.
        DataError: The file is missing, empty, truncated or not a pickle.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return safe_loads(data, str(path))
