"""Snapshots of third-party environments, and the restricted unpicklers that read them back.

A Gymnasium environment's snapshot holds the attributes that differ from a freshly made instance,
pickled (base64 text in the trace). A snapshot may come from an episode file someone else wrote, so
it is read by :class:`SnapshotUnpickler` (the pure-Python unpickler, checked opcode by opcode):
only numpy globals, only the calls numpy's own pickles make, BUILD only on objects the snapshot
created, arrays of at most :data:`MAX_ARRAY_BYTES`. :class:`MiniGridUnpickler` adds MiniGrid's data
classes (made without their ``__init__``) and one persistent reference, the environment itself.
Nothing here can run code, change anything module-level or allocate its way out of memory; the
tests in ``tests/envs/test_snapshots.py`` try.
"""

from __future__ import annotations

import base64
import contextlib
import io
import pickle
from typing import Any

import numpy as np

#: Globals a snapshot may name (what gym environments' state pickles use: numpy arrays, scalars,
#: dtypes and random generators). Anything else is refused, so no snapshot can run code.
SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
} | {
    ("numpy.random._" + module, name)
    for module, name in (
        ("pcg64", "PCG64"),
        ("pcg64", "PCG64DXSM"),
        ("mt19937", "MT19937"),
        ("philox", "Philox"),
        ("sfc64", "SFC64"),
        ("generator", "Generator"),
    )
}


#: Of those, what a snapshot may call (REDUCE); the classes are only arguments.
CALLABLE = {
    "_reconstruct",
    "scalar",
    "dtype",
    "__generator_ctor",
    "__bit_generator_ctor",
    "__randomstate_ctor",
    "__pyx_unpickle_SeedSequence",
}


#: Bytes of one snapshot attribute as pickled, and of any array it may create.
MAX_PICKLE_BYTES = 1_000_000


MAX_ARRAY_BYTES = 8_000_000


class SnapshotUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be checked one by one
    """Unpickles a snapshot someone else may have written, refusing before it happens anything that could
    run code, change the process (a BUILD on a module-level function rewrote numpy's defaults), or
    allocate beyond a budget (``list(range(2e7))`` from 40 bytes)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._made: set[int] = set()  # objects this snapshot created: the only ones BUILD may fill

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"snapshot refers to {module}.{name}, which is not allowed")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if getattr(func, "__name__", None) not in CALLABLE or not isinstance(args, tuple):
            raise pickle.UnpicklingError(
                f"snapshot calls {getattr(func, '__name__', type(func).__name__)}, which is not allowed"
            )
        if func.__name__ == "_reconstruct":  # ndarray.__new__(cls, shape, dtype): numpy pickles an empty (0,) shell
            # of a one-letter type code; the real shape and dtype come with BUILD, which checks their size.
            if len(args) != 3 or args[0] is not np.ndarray or _elements(args[1]) > 1 or not _type_code(args[2]):
                raise pickle.UnpicklingError("snapshot builds an array in a way numpy never pickles")
        for arg in args:  # a data type that outgrew the budget (a BUILD on it) is refused before it is used
            if isinstance(arg, np.dtype) and arg.itemsize > MAX_ARRAY_BYTES:
                raise pickle.UnpicklingError("snapshot uses an oversized data type")
        made = func(*args)
        if isinstance(made, np.dtype) and made.itemsize > MAX_ARRAY_BYTES:
            raise pickle.UnpicklingError("snapshot declares an oversized data type")
        self._made.add(id(made))
        self.stack[-1] = made

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_build(self) -> None:
        state = self.stack[-1]
        target = self.stack[-2]
        if id(target) not in self._made:
            raise pickle.UnpicklingError("snapshot tries to change an object it did not create")
        if isinstance(target, np.ndarray):  # (version, shape, dtype, fortran, data)
            if not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[2], np.dtype):
                raise pickle.UnpicklingError("snapshot has a malformed array")
            if _elements(state[1]) * max(state[2].itemsize, 1) > MAX_ARRAY_BYTES:
                raise pickle.UnpicklingError(f"snapshot has an array of more than {MAX_ARRAY_BYTES:,} bytes")
        super().load_build()
        if isinstance(target, np.dtype) and target.itemsize > MAX_ARRAY_BYTES:  # a BUILD made it a huge subarray type
            raise pickle.UnpicklingError("snapshot declares an oversized data type")

    dispatch[pickle.BUILD[0]] = load_build

    def _refuse(self) -> None:
        raise pickle.UnpicklingError("snapshot creates objects in a way gym snapshots never do")

    for _opcode in (
        pickle.NEWOBJ,
        pickle.NEWOBJ_EX,
        pickle.OBJ,
        pickle.INST,
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
        pickle.PERSID,
        pickle.BINPERSID,
    ):
        dispatch[_opcode[0]] = _refuse
    del _opcode


def _type_code(value: Any) -> bool:
    """Whether ``value`` is what numpy's pickles give ``_reconstruct`` as its dtype: one type letter."""
    return isinstance(value, bytes) and len(value) == 1 and value.isalpha()


def _elements(shape: Any) -> int:
    """How many elements an array of ``shape`` holds (refusing what is not a shape)."""
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError("snapshot has a malformed array shape")
    return int(np.prod(shape, dtype=np.float64)) if shape else 1


def dump_value(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")


def snapshot_bytes(data: Any) -> bytes:
    """The bytes of a base64 snapshot value, refused (UnpicklingError) past MAX_PICKLE_BYTES or malformed."""
    if not isinstance(data, str) or len(data) > MAX_PICKLE_BYTES * 4 // 3 + 4:
        raise pickle.UnpicklingError(f"a snapshot value is not base64 text of at most {MAX_PICKLE_BYTES:,} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise pickle.UnpicklingError("a snapshot value is not base64 text") from None


def load_value(data: Any) -> Any:
    return SnapshotUnpickler(snapshot_bytes(data)).load()


def checked_counters(counters: Any) -> list[int | None]:
    """A snapshot's step counters (one per wrapper): a short list of whole numbers or None; ValueError if not."""
    if not isinstance(counters, list) or len(counters) > 64:
        raise ValueError("its step counters are not a list")
    if not all(c is None or (isinstance(c, int) and not isinstance(c, bool) and c >= 0) for c in counters):
        raise ValueError("its step counters are not whole numbers")
    return counters


def picklable(value: Any) -> bytes | None:
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:  # render caches (pygame surfaces, clocks) cannot be pickled; they are not state
        return None


def state_classes() -> tuple[type, ...]:
    """MiniGrid's data classes a snapshot may hold: world objects, the grid, rooms, BabyAI's verifiers."""
    from minigrid.core.grid import Grid
    from minigrid.core.roomgrid import Room
    from minigrid.core.world_object import WorldObj
    from minigrid.envs.babyai.core.verifier import Instr, ObjDesc

    classes: list[type] = [WorldObj, Grid, Room, Instr, ObjDesc]
    with contextlib.suppress(ImportError):
        from minigrid.envs.multiroom import MultiRoom  # MultiRoom's room records

        classes.append(MultiRoom)
    return tuple(classes)


def loaded_subclasses(bases: tuple[type, ...]) -> list[type]:
    """``bases`` and every subclass of them defined so far (in modules already imported)."""
    seen: list[type] = []
    todo = list(bases)
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


class MiniGridUnpickler(SnapshotUnpickler):
    """The gym snapshot unpickler, plus MiniGrid's data classes (made without running their
    ``__init__``, their fields set by BUILD) and one persistent reference: the environment itself,
    which BabyAI's verifiers point back to."""

    dispatch = dict(SnapshotUnpickler.dispatch)

    def __init__(self, data: bytes, env: Any) -> None:
        super().__init__(data)
        self.env = env
        self.allowed = state_classes()
        #: The classes a snapshot may name, by (module, name): MiniGrid's data classes already loaded.
        #: A name is looked up here, never imported: a snapshot cannot make the process import anything.
        self.known = {(cls.__module__, cls.__qualname__): cls for cls in loaded_subclasses(self.allowed)}

    def find_class(self, module: str, name: str) -> Any:
        found = self.known.get((module, name))
        if found is not None:
            return found
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if pid == "env":
            return self.env
        raise pickle.UnpicklingError("snapshot refers to an object outside the environment")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, self.allowed)) or args != ():
            raise pickle.UnpicklingError("snapshot creates an object that is not MiniGrid state")
        made = cls.__new__(cls)
        self._made.add(id(made))
        self.append(made)

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.BINPERSID[0]] = pickle._Unpickler.load_binpersid


class EnvPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, env: Any) -> None:
        super().__init__(file, protocol=4)
        self.env = env

    def persistent_id(self, obj: Any) -> Any:
        return "env" if obj is self.env else None
