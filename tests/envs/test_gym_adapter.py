"""The Gymnasium adapter: named actions, text observations, frames, safe snapshots, errors."""

from __future__ import annotations

import base64
import os
import pickle

import gymnasium
import numpy as np
import pytest

from studio.agents.scripted import HumanPolicy
from studio.envs import gym_adapter, make_env
from studio.errors import BadOption, UnknownEnvironment
from studio.episodes.runner import EpisodeRunner, RunnerConfig


def test_frozenlake_has_named_actions_and_a_text_map() -> None:
    env = make_env("gym:FrozenLake-v1", {"is_slippery": False})
    observation, _ = env.reset(seed=0)
    assert env.valid_actions() == ["left", "down", "right", "up"]
    assert "@FFF" in observation and "(@ marks your position)" in observation
    observation, reward, terminated, _truncated, _info = env.step("down")
    assert "@HFH" in observation.splitlines()  # moved one row down, onto row 2 of the map
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_frozenlake_success_on_reaching_the_goal() -> None:
    env = make_env("gym:FrozenLake-v1", {"is_slippery": False})
    env.reset(seed=0)
    for action in ["down", "down", "right", "right", "down", "right"]:
        _obs, reward, terminated, _truncated, info = env.step(action)
    assert terminated and reward == 1.0 and info["success"]


def test_vector_observations_are_formatted_with_field_names() -> None:
    env = make_env("gym:CartPole-v1")
    observation, _ = env.reset(seed=0)
    assert "pole angle = " in observation and env.valid_actions() == ["push left", "push right"]


def _balance(env) -> str:
    """A CartPole controller that keeps the pole up: push the way the pole falls."""
    _x, _v, angle, spin = env.raw_observation
    return "push right" if angle + 0.5 * spin > 0 else "push left"


def _pump(env) -> str:
    """A MountainCar controller that reaches the flag: push the way the car moves (pumping energy)."""
    return "accelerate right" if env.raw_observation[1] >= 0 else "accelerate left"


def _episode(name: str, choose, max_steps: int):
    runner = EpisodeRunner(name, HumanPolicy(), config=RunnerConfig(max_steps=max_steps))
    runner.reset(seed=0)
    while not runner.episode.done:
        runner.step(action=choose(runner.env))
    return runner.episode


def test_cartpole_success_is_surviving_to_the_step_limit() -> None:
    kept_up = _episode("gym:CartPole-v1", _balance, max_steps=40)
    assert kept_up.success and kept_up.length == 40 and kept_up.end_reason == "survived to the step limit"
    assert "lasting to the step limit" in kept_up.steps[-1].info["success_rule"]
    fell = _episode("gym:CartPole-v1", lambda env: "push left", max_steps=40)
    assert fell.success is False and fell.length < 40 and fell.end_reason == "terminated"
    assert fell.steps[-1].info["success"] is False and "success_rule" in fell.steps[-1].info


def test_cartpole_survival_to_the_environments_own_limit() -> None:
    env = make_env("gym:CartPole-v1", {"max_episode_steps": 25})
    env.reset(seed=0)
    for _ in range(25):
        _obs, _reward, terminated, truncated, info = env.step(_balance(env))
    assert truncated and not terminated and info["success"] is True


def test_mountaincar_success_is_reaching_the_flag_despite_negative_rewards() -> None:
    episode = _episode("gym:MountainCar-v0", _pump, max_steps=200)
    assert episode.success and episode.end_reason == "goal reached" and episode.total_return < 0
    assert episode.steps[-1].terminated and episode.steps[-1].info["success_rule"].startswith(
        "success: the episode terminated"
    )
    stuck = _episode("gym:MountainCar-v0", lambda env: "no acceleration", max_steps=30)
    assert stuck.success is False and stuck.end_reason == "step limit"


def test_an_environment_that_reports_success_is_believed() -> None:
    rule = gym_adapter.SURVIVAL
    assert rule.decide(0.0, True, False, {"is_success": True}) is True
    assert gym_adapter.POSITIVE_REWARD.decide(5.0, True, False, {"success": False}) is False


def test_taxi_and_blackjack_are_described_in_words() -> None:
    taxi = make_env("gym:Taxi-v4")
    observation, _ = taxi.reset(seed=1)
    row, column, passenger, destination = taxi.env.unwrapped.decode(int(taxi.raw_observation))
    stands = gym_adapter.TAXI_STANDS
    assert f"The taxi is at row {row}, column {column}." in observation
    assert f"waiting at {stands[passenger]}; the destination is {stands[destination]}." in observation
    taxi.env.unwrapped.s = taxi.env.unwrapped.encode(row, column, 4, destination)  # the passenger aboard
    taxi.raw_observation = taxi.env.unwrapped.s
    assert "The passenger is in the taxi" in taxi._text("")
    blackjack = make_env("gym:Blackjack-v1")
    observation, _ = blackjack.reset(seed=1)
    total, dealer, ace = blackjack.raw_observation
    assert f"Your sum is {total}, the dealer shows" in observation and "(" not in observation
    assert ("a usable ace" if ace else "no usable ace") in observation


@pytest.mark.parametrize("name", ["gym:os:Foo-v0", "gym:minigrid:MiniGrid-Empty-5x5-v0", "gym:../etc-v0 x"])
def test_ids_that_would_import_a_module_are_refused(name: str) -> None:
    with pytest.raises(UnknownEnvironment, match="is not a Gymnasium id"):
        make_env(name)


def test_a_family_whose_package_is_missing_says_how_to_install_it(monkeypatch) -> None:
    family = gym_adapter.GymFamily(("Nowhere-",), "no_such_package_for_studio", "pip install nowhere")
    monkeypatch.setattr(gym_adapter, "FAMILIES", [family, *gym_adapter.FAMILIES])
    with pytest.raises(UnknownEnvironment, match="needs the no_such_package_for_studio package: pip install nowhere"):
        make_env("gym:Nowhere-Empty-v0")


class _MultiDiscreteEnv(gymnasium.Env):
    """An action space the adapter does not take."""

    metadata = {"render_modes": ["rgb_array"]}
    action_space = gymnasium.spaces.MultiDiscrete([2, 3])
    observation_space = gymnasium.spaces.Discrete(1)

    def __init__(self, render_mode=None) -> None:
        self.render_mode = render_mode


gymnasium.register("StudioMultiDiscrete-v0", entry_point=_MultiDiscreteEnv)


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        ("gym:NoSuchEnv-v0", {}, UnknownEnvironment, "could not make"),
        ("gym:StudioMultiDiscrete-v0", {}, UnknownEnvironment, "only Discrete and Box"),
        ("gym:", {}, UnknownEnvironment, "Give a Gymnasium id"),
        ("gym:FrozenLake-v1", {"bogus": 1}, BadOption, "bogus"),
    ],
)
def test_user_errors_are_one_clear_line(name: str, options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        make_env(name, options)
    assert "\n" not in str(info.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_snapshot_from_an_untrusted_file_cannot_run_code() -> None:
    env = make_env("gym:FrozenLake-v1")
    env.reset(seed=0)
    state = env.get_state()
    state["attributes"]["s"] = base64.b64encode(pickle.dumps(_Exploit())).decode("ascii")
    with pytest.raises(BadOption, match="cannot be restored"):
        env.set_state(state)


def test_slippery_dynamics_are_reproduced_from_a_snapshot() -> None:
    env = make_env("gym:FrozenLake-v1", {"is_slippery": True})
    env.reset(seed=0)
    env.step("right")
    snapshot = env.get_state()
    outcomes = [env.step("down")[:4]]
    for _ in range(3):
        env.set_state(snapshot)
        outcomes.append(env.step("down")[:4])
    assert len(set(outcomes)) == 1


class _Reduce:
    """Pickles as a call of ``func(*args)``: how a hostile snapshot asks the unpickler to allocate."""

    def __init__(self, func, args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _with_attribute(pickled: bytes, name: str = "s") -> dict:
    env = make_env("gym:FrozenLake-v1")
    env.reset(seed=0)
    state = env.get_state()
    state["attributes"][name] = base64.b64encode(pickled).decode("ascii")
    return state


def _grown_dtype_array(shape: tuple[int, ...]) -> bytes:
    """``_reconstruct(ndarray, (1,), dtype)`` where the dtype is pickled as ``V8`` with the state of a
    byte subarray type of ``shape``: the shape says one element, the BUILD says how big it is."""
    dtype = pickle.dumps(np.dtype(("u1", shape)), protocol=2)
    name = f"V{int(np.prod(shape))}".encode()
    dtype = dtype.replace(b"X" + len(name).to_bytes(4, "little") + name, b"X\x02\x00\x00\x00V8")
    return b"\x80\x02cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\nK\x01\x85" + dtype[2:-1] + b"tR."


HOSTILE_SNAPSHOTS = {
    "a 40-byte list of 20 million ints": pickle.dumps(_Reduce(list, (range(20_000_000),)), protocol=4),
    "a billion zero bytes": pickle.dumps(_Reduce(bytes, (10**9,)), protocol=4),
    "an array of 10 GB": pickle.dumps(
        _Reduce(np._core.multiarray._reconstruct, (np.ndarray, (10**10,), b"b")), protocol=4
    ),
    "a data type of 1 TB": pickle.dumps(_Reduce(np.dtype, ("V1000000000000",)), protocol=4),
    # An 8-byte data type that a BUILD turns into a 24 GB subarray type, then one element of it.
    "a data type grown by BUILD, then an array of one element": _grown_dtype_array((2_000_000_000,)),
    # BUILD on a module-level numpy function: would rewrite its defaults for the whole process.
    "a BUILD on numpy's own function": (
        b"\x80\x04cnumpy.random._pickle\n__generator_ctor\nN}\x8c\x0c__defaults__\x8c\x04evil\x85s\x86b."
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SNAPSHOTS))
def test_hostile_snapshots_are_refused_before_they_cost_anything(name: str) -> None:
    import resource

    from numpy.random import _pickle

    defaults = _pickle.__generator_ctor.__defaults__
    env = make_env("gym:FrozenLake-v1")
    env.reset(seed=0)
    before_state = env.get_state()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(BadOption, match="cannot be restored"):
        env.set_state(_with_attribute(HOSTILE_SNAPSHOTS[name]))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000  # under 100 MB more at the peak
    assert _pickle.__generator_ctor.__defaults__ == defaults  # nothing module-level changed
    assert env.get_state() == before_state  # and the environment is as it was


@pytest.mark.parametrize("attribute", ["step", "__class__", "render_mode", "np_random", "not an identifier"])
def test_a_snapshot_sets_only_data_attributes(attribute: str) -> None:
    with pytest.raises(BadOption, match="cannot be restored"):
        make_env("gym:FrozenLake-v1").set_state(_with_attribute(pickle.dumps(3), attribute))


def test_malformed_snapshots_are_one_line() -> None:
    env = make_env("gym:FrozenLake-v1")
    env.reset(seed=0)
    good = env.get_state()
    for broken in (
        {},
        {**good, "elapsed_steps": "x"},
        {**good, "seed": "7"},
        {**good, "attributes": {"s": "%%%"}},
        {**good, "attributes": {"s": "A" * 2_000_000}},
    ):
        with pytest.raises(BadOption, match="cannot be restored") as error:
            env.set_state(broken)
        assert "\n" not in str(error.value)
