"""The vector library and the steering spelling, at the boundary: names are names (never paths), a
damaged or foreign file is one line, a vector's hash does not depend on how its file was written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from studio.errors import StudioError
from studio.internals.vectors import SteerSpec, SteeringVector, VectorLibrary, parse_steer, steer_variant


def a_vector(name: str = "explore") -> SteeringVector:
    rng = np.random.default_rng(0)
    return SteeringVector(
        name, {i: rng.standard_normal(8).astype(np.float32) for i in range(4)}, "east", "tiny", 2, {"steps": 3}
    )


def test_a_vector_round_trips_with_a_stable_hash(tmp_path) -> None:
    library = VectorLibrary(tmp_path)
    vector = a_vector()
    library.save(vector)
    loaded = library.load("explore")
    assert loaded.sha256 == vector.sha256 and loaded.made_from == {"steps": 3} and loaded.layer == 2
    for layer, direction in vector.directions.items():
        np.testing.assert_array_equal(loaded.directions[layer], direction)
    code = "from studio.internals.vectors import VectorLibrary; import sys; print(VectorLibrary(sys.argv[1]).load('explore').sha256)"
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert again.stdout.strip() == vector.sha256  # another process (safetensors orders metadata freely)
    steering = loaded.steering((1, 3), 2.5, "generated")
    assert steering.record() == {
        "vector": "explore",
        "sha256": vector.sha256,
        "layers": [1, 3],
        "alpha": 2.5,
        "positions": "generated",
    }
    with pytest.raises(StudioError, match="exists"):
        library.save(vector)
    assert library.names() == ["explore"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65, "C:\\evil"])
def test_names_are_never_paths(tmp_path, name) -> None:
    with pytest.raises(StudioError, match="A vector name is") as caught:
        VectorLibrary(tmp_path).load(name)
    assert "\n" not in str(caught.value)


def test_damaged_and_foreign_files_are_one_line(tmp_path) -> None:
    from safetensors.numpy import save_file

    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 40)
    save_file({"weight": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    save_file(
        {"layer.0": np.array([np.nan, 1], np.float32)},
        str(tmp_path / "nan.safetensors"),
        metadata={"format": "agent-studio-steering-vector"},
    )
    library = VectorLibrary(tmp_path)
    for name, message in (("junk", "not a readable"), ("other", "not an Agent Studio"), ("nan", "not a finite")):
        with pytest.raises(StudioError, match=message) as caught:
            library.load(name)
        assert "\n" not in str(caught.value)
    with pytest.raises(StudioError, match="No steering vector named 'missing'"):
        library.load("missing")


def test_the_steering_spelling() -> None:
    assert parse_steer("") is None
    assert parse_steer("explore:4") == SteerSpec("explore", None, 4.0, "all")
    assert parse_steer("explore:12:-2") == SteerSpec("explore", (12,), -2.0, "all")
    assert parse_steer("explore:10-12:2:generated") == SteerSpec("explore", (10, 11, 12), 2.0, "generated")
    assert parse_steer("explore:3:prompt") == SteerSpec("explore", None, 3.0, "prompt")
    for bad, message in (
        ("explore", "Steering is"),
        ("explore:x:1", "LAYERS"),
        ("explore:1:nan", "from -1000"),
        ("explore:1:1e9", "from -1000"),
        ("explore:1:2:sideways", "positions"),
        ("../x:1", "vector name"),
        ("explore:5-2:1", "backwards"),
    ):
        with pytest.raises(StudioError, match=message):
            parse_steer(bad)
    assert steer_variant("explore:12:1", "4") == "explore:12:4"
    assert steer_variant("explore:12:1:generated", "0") == "explore:12:0:generated"
    assert steer_variant("", "other:3") == "other:3"
    with pytest.raises(StudioError, match="give --steer"):
        steer_variant("", "4")


def test_a_sweep_varies_alpha_of_its_own_vector() -> None:
    from studio.evaluation.sweep import SweepSpec

    spec = SweepSpec.build(
        ["default"], ["gridworld"], "0-1", {"steer": "explore:12:1"}, vary={"steer": ["0", "2", "4"]}
    )
    assert [spec.episode_settings(v).steer for v in spec.variants("default")] == [
        "explore:12:0",
        "explore:12:2",
        "explore:12:4",
    ]
    with pytest.raises(StudioError, match="give --steer"):
        SweepSpec.build(["default"], ["gridworld"], "0-1", {}, vary={"steer": ["0", "2"]})
    with pytest.raises(StudioError, match="LAYERS"):
        SweepSpec.build(["default"], ["gridworld"], "0-1", {"steer": "explore:bad:1"})
