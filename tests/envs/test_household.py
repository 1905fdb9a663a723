"""Household rules: admissible commands, receptacles, appliances, goals."""

from __future__ import annotations

from studio.envs.household import Household


def world(**options) -> Household:
    env = Household(**options)
    env.reset(seed=4)
    return env


def closed_receptacle(env: Household) -> dict:
    return next(r for r in env.receptacles if r["kind"] in ("cabinet", "drawer", "fridge") and r["contents"])


def test_objects_in_closed_receptacles_cannot_be_taken_until_opened() -> None:
    env = world()
    target = next((r for r in env.receptacles if r["kind"] in ("cabinet", "drawer") and r["contents"]), None)
    if target is None:  # put something in a cabinet so the rule can be checked
        target = next(r for r in env.receptacles if r["kind"] == "cabinet")
        source = next(r for r in env.receptacles if r["contents"])
        target["contents"].append(source["contents"].pop())
    obj = target["contents"][0]
    observation, *_ = env.step(f"go to {target['name']}")
    assert f"The {target['name']} is closed." in observation
    assert f"take {obj} from {target['name']}" not in env.valid_actions()
    assert env.step(f"take {obj} from {target['name']}")[0].startswith("Invalid action")
    observation, *_ = env.step(f"open {target['name']}")
    assert obj in observation
    env.step(f"take {obj} from {target['name']}")
    assert env.holding == obj and env.step("inventory")[0] == f"You are carrying: a {obj}."


def test_one_object_in_hand_and_put_where_you_are() -> None:
    env = world()
    surface = next(r for r in env.receptacles if r["kind"] == "countertop")
    surface["contents"] += ["mug 9", "apple 9"]
    env.objects["mug 9"] = {"kind": "mug", "clean": False, "heat": False, "cool": False}
    env.objects["apple 9"] = {"kind": "apple", "clean": False, "heat": False, "cool": False}
    env.step(f"go to {surface['name']}")
    env.step(f"take mug 9 from {surface['name']}")
    assert not any(a.startswith("take ") for a in env.valid_actions())
    assert f"put mug 9 on {surface['name']}" in env.valid_actions()


def test_appliances_change_object_state() -> None:
    env = world(rooms=1)
    surface = next(r for r in env.receptacles if r["kind"] == "countertop")
    surface["contents"].append("mug 9")
    env.objects["mug 9"] = {"kind": "mug", "clean": False, "heat": False, "cool": False}
    env.step(f"go to {surface['name']}")
    env.step(f"take mug 9 from {surface['name']}")
    assert "clean mug 9 with sinkbasin 1" not in env.valid_actions()  # not at the sink
    env.step("go to sinkbasin 1")
    env.step("clean mug 9 with sinkbasin 1")
    env.step("go to microwave 1")
    env.step("heat mug 9 with microwave 1")
    assert env.step("examine mug 9")[0] == "This is a clean hot mug (mug 9)."


def test_expert_completes_the_goal_and_is_rewarded() -> None:
    env = world(task="cool")
    assert "cool" in env.goal["text"] and env.instruction.startswith("Your task is to: put a cool")
    for _ in range(30):
        observation, reward, terminated, _truncated, info = env.step(env.expert_action())
        if terminated:
            break
    assert terminated and reward == 1.0 and info["success"] and observation.endswith("Task complete!")


def test_expert_recovers_when_holding_the_wrong_object() -> None:
    env = world(task="pick")
    wrong = next(o for o, rec in env.objects.items() if rec["kind"] != env.goal["object"])
    env._where(wrong)["contents"].remove(wrong)
    env.holding = wrong
    for _ in range(30):
        *_rest, terminated, _truncated, info = env.step(env.expert_action())
        if terminated:
            break
    assert info["success"]


def test_look_lists_rooms_and_receptacles() -> None:
    env = world(rooms=3)
    observation = env.step("look")[0]
    assert "middle of the kitchen" in observation and "living room" in observation and "bedroom" in observation
