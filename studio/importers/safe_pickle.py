"""Pickles read as plain data only: nothing a pickle names is imported or run.

AgentLab and BrowserGym keep their steps as pickles of their own classes, which an ordinary
``pickle.load`` would import (and whose ``__reduce__`` could run anything: ``os.system``). Here
every global a pickle names is looked up in a short list of data types (builtins' containers and
scalars, NumPy arrays and dtypes, datetimes); a class from an allowed package (``agentlab``,
``browsergym`` by default) becomes a :class:`PlainRecord` — a stand-in that only keeps the
state it is given — and anything else refuses the whole file. After loading, a class or function
left as a value (a pickle holding a callable) refuses it too.
"""

from __future__ import annotations

import copyreg
import datetime
import io
import pickle
from typing import Any

import numpy as np

from studio.errors import StudioError

#: The globals a pickle may name: plain data types and the reconstructors NumPy's arrays use.
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): dict,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
}


class PlainRecord:
    """A stand-in for an allowed package's object: its class name and the state it was pickled with."""

    _class_name = "object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_state"] = {"args": list(args), **kwargs} if args or kwargs else {}
        self.__dict__["_items"] = {}
        self.__dict__["_list"] = []

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.setdefault("_state", {})
        if isinstance(state, dict):
            self.__dict__["_state"].update(state)
        else:
            self.__dict__["_state"]["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # a dict subclass's items
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:  # a list subclass's items
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)

    def plain(self) -> dict[str, Any]:
        data = dict(self.__dict__.get("_state", {}))
        data.update(self.__dict__.get("_items", {}))
        if self.__dict__.get("_list"):
            data["items"] = list(self.__dict__["_list"])
        data["__class__"] = self._class_name
        return data


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` limited to stand-ins and plain types."""
    if isinstance(cls, type) and issubclass(cls, PlainRecord):
        return cls.__new__(cls)
    if cls in (dict, list, tuple, set, frozenset) and base is object:
        return copyreg._reconstructor(cls, base, state)
    raise StudioError(f"refused: the pickle asks to build {getattr(cls, '__name__', cls)!r}, which is not plain data")


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only (see the module's docstring)."""

    def __init__(self, file: Any, packages: tuple[str, ...]) -> None:
        super().__init__(file)
        self.packages = packages
        self.stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if (module, name) == ("copyreg", "_reconstructor"):
            return _safe_reconstructor
        if module.split(".")[0] in self.packages and name.replace("_", "").isalnum():
            key = (module, name)
            if key not in self.stand_ins:
                self.stand_ins[key] = type(name, (PlainRecord,), {"_class_name": f"{module}.{name}"})
            return self.stand_ins[key]
        raise StudioError(f"refused: the pickle asks for {module[:80]}.{name[:80]}, which is code, not data")


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` with every stand-in as a dict; a class or function anywhere in it is refused."""
    if depth > 200:
        raise StudioError("refused: the pickle is nested too deeply")
    if isinstance(value, PlainRecord):
        return plain(value.plain(), depth + 1)
    if isinstance(value, dict):
        return {plain(k, depth + 1) if not isinstance(k, str) else k: plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [plain(v, depth + 1) for v in value.tolist()]
        return value
    if isinstance(value, type) or callable(value):
        name = getattr(value, "_class_name", None) or getattr(value, "__qualname__", type(value).__name__)
        raise StudioError(f"refused: the pickle holds {name!s:.120}, which is code, not data")
    return value


def load_plain(data: bytes, packages: tuple[str, ...] = ("agentlab", "browsergym")) -> Any:
    """The plain data in a pickle's bytes (see the module's docstring); StudioError, one line, otherwise."""
    try:
        loaded = PlainUnpickler(io.BytesIO(data), packages).load()
    except StudioError:
        raise
    except Exception as exc:  # a truncated or malformed pickle
        raise StudioError(f"not a readable pickle ({type(exc).__name__}: {str(exc)[:120]})") from None
    return plain(loaded)
