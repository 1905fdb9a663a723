"""The restricted unpicklers (studio/envs/snapshots.py) on their own: what gym and MiniGrid snapshots
hold comes back; what a hostile file could ask for is refused before it happens."""

from __future__ import annotations

import base64
import io
import os
import pickle

import numpy as np
import pytest

from studio.envs.snapshots import (
    MAX_ARRAY_BYTES,
    MAX_PICKLE_BYTES,
    EnvPickler,
    MiniGridUnpickler,
    SnapshotUnpickler,
    dump_value,
    load_value,
    snapshot_bytes,
)


class Plain:
    """An ordinary class: not a numpy global, so a snapshot cannot name it."""


class Built:
    """Pickles as numpy's own array shell (``_reconstruct``) and then a BUILD with the given state."""

    def __init__(self, state) -> None:
        self.state = state

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state


class Calls:
    """Pickles as ``func(*args)`` (REDUCE), as a hostile snapshot would write it."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_numpy_state_round_trips() -> None:
    value = {"grid": np.arange(12, dtype=np.int16).reshape(3, 4), "rng": np.random.default_rng(7), "t": np.float32(2.5)}
    back = load_value(dump_value(value))
    assert np.array_equal(back["grid"], value["grid"]) and back["grid"].dtype == np.int16
    assert back["rng"].random() == np.random.default_rng(7).random() and back["t"] == np.float32(2.5)


@pytest.mark.parametrize(
    "hostile, refusal",
    [
        (Calls(os.system, "true"), "not allowed"),
        (Calls(eval, "1"), "not allowed"),
        (Calls(list, range(10)), "not allowed"),
    ],
)
def test_globals_and_calls_outside_numpy_are_refused(hostile, refusal: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match=refusal):
        load_value(base64.b64encode(pickle.dumps(hostile, protocol=4)).decode())


def test_an_array_past_the_budget_is_refused_before_it_is_allocated() -> None:
    fits = Built((1, (4,), np.dtype("u1"), False, b"\x01\x02\x03\x04"))
    assert list(SnapshotUnpickler(pickle.dumps(fits, protocol=4)).load()) == [1, 2, 3, 4]
    side = int(np.sqrt(MAX_ARRAY_BYTES)) + 1
    huge = Built((1, (side, side), np.dtype("u1"), False, b""))
    with pytest.raises(pickle.UnpicklingError, match="more than"):
        SnapshotUnpickler(pickle.dumps(huge, protocol=4)).load()


def test_objects_made_any_other_way_are_refused() -> None:
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        SnapshotUnpickler(pickle.dumps(Plain(), protocol=4)).load()  # its class is not a numpy global
    with pytest.raises(pickle.UnpicklingError, match="did not create"):
        SnapshotUnpickler(b"\x80\x04cnumpy\ndtype\n}b.").load()  # BUILD on numpy's own class: a module-level change


def test_snapshot_text_is_checked_before_unpickling() -> None:
    with pytest.raises(pickle.UnpicklingError, match="not base64"):
        snapshot_bytes("not base64 at all!")
    with pytest.raises(pickle.UnpicklingError, match="at most"):
        snapshot_bytes("A" * (MAX_PICKLE_BYTES * 2))
    with pytest.raises(pickle.UnpicklingError):
        snapshot_bytes(12)


def test_minigrid_state_round_trips_and_only_minigrid_classes_are_made() -> None:
    from minigrid.core.world_object import Ball

    env = object()
    buffer = io.BytesIO()
    EnvPickler(buffer, env).dump({"ball": Ball("red"), "env": env})
    back = MiniGridUnpickler(buffer.getvalue(), env).load()
    assert isinstance(back["ball"], Ball) and back["ball"].color == "red" and back["env"] is env

    with pytest.raises(pickle.UnpicklingError):
        MiniGridUnpickler(pickle.dumps(Plain(), protocol=4), env).load()
    foreign = io.BytesIO()
    EnvPickler(foreign, env).dump({"other": object()})
    with pytest.raises(pickle.UnpicklingError):
        MiniGridUnpickler(foreign.getvalue(), env).load()
