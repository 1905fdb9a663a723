"""Household: an ALFWorld-style text world of rooms, receptacles and objects.

Goals such as "put a clean mug in cabinet" are generated from the seed. The agent moves
between receptacles (``go to cabinet 2``), opens and closes them, takes and puts objects
(one in hand at a time), and cleans, heats or cools what it holds with the sink basin,
the microwave or the fridge. ``valid_actions()`` lists the admissible commands of the
current state (as ALFWorld does); anything else is refused with "Nothing happens". The
expert knows where everything is and plans the shortest route from the current state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from studio.envs.base import OptionSpec, StudioEnv
from studio.envs.registry import register_env


@dataclass(frozen=True)
class ReceptacleKind:
    """A kind of receptacle: how it is named and what it allows."""

    name: str
    openable: bool = False
    container: bool = False  # "in" rather than "on"
    appliance: str | None = None  # the verb it performs: clean, heat or cool


RECEPTACLES = {
    kind.name: kind
    for kind in (
        ReceptacleKind("fridge", openable=True, container=True, appliance="cool"),
        ReceptacleKind("microwave", openable=True, container=True, appliance="heat"),
        ReceptacleKind("sinkbasin", container=True, appliance="clean"),
        ReceptacleKind("countertop"),
        ReceptacleKind("cabinet", openable=True, container=True),
        ReceptacleKind("drawer", openable=True, container=True),
        ReceptacleKind("diningtable"),
        ReceptacleKind("shelf"),
        ReceptacleKind("sofa"),
        ReceptacleKind("coffeetable"),
        ReceptacleKind("desk"),
        ReceptacleKind("dresser", openable=True, container=True),
        ReceptacleKind("bed"),
    )
}

#: Receptacle kinds per room; the kitchen always exists and holds the three appliances.
ROOMS: dict[str, list[str]] = {
    "kitchen": [
        "fridge",
        "microwave",
        "sinkbasin",
        "countertop",
        "countertop",
        "cabinet",
        "cabinet",
        "cabinet",
        "drawer",
        "diningtable",
    ],
    "living room": ["sofa", "coffeetable", "shelf", "shelf", "drawer", "cabinet"],
    "bedroom": ["bed", "desk", "dresser", "shelf", "drawer"],
}
OPTIONAL_ROOMS = ["living room", "bedroom"]

#: Object kinds: which properties they can take and the rooms where they are found.
OBJECTS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "mug": (frozenset({"clean", "heat", "cool"}), ("kitchen",)),
    "cup": (frozenset({"clean", "heat", "cool"}), ("kitchen",)),
    "bowl": (frozenset({"clean", "heat", "cool"}), ("kitchen",)),
    "plate": (frozenset({"clean", "heat", "cool"}), ("kitchen", "living room")),
    "apple": (frozenset({"clean", "heat", "cool"}), ("kitchen",)),
    "potato": (frozenset({"clean", "heat", "cool"}), ("kitchen",)),
    "egg": (frozenset({"heat", "cool"}), ("kitchen",)),
    "tomato": (frozenset({"clean", "heat", "cool"}), ("kitchen",)),
    "bread": (frozenset({"heat", "cool"}), ("kitchen",)),
    "knife": (frozenset({"clean"}), ("kitchen",)),
    "spoon": (frozenset({"clean"}), ("kitchen",)),
    "book": (frozenset(), ("living room", "bedroom")),
    "remotecontrol": (frozenset(), ("living room",)),
    "pen": (frozenset(), ("bedroom", "living room")),
    "cloth": (frozenset({"clean"}), ("bedroom", "kitchen")),
}
#: Adjective of each property in goals and examine texts.
ADJECTIVE = {"clean": "clean", "heat": "hot", "cool": "cool"}
APPLIANCE_FOR = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}
TASKS = ("pick", "clean", "heat", "cool")

FRAME_W, FRAME_H = 720, 420
INK = (40, 42, 54)
MUTED = (120, 124, 140)


class Household(StudioEnv):
    """An ALFWorld-style household with rooms, receptacles, objects and appliances."""

    name = "household"
    action_summary = "finite, state-dependent: go to R, open/close R, take O from R, put O in/on R, clean/heat/cool O with R, examine, inventory, look"
    actions_depend_on_state = True
    option_specs = (
        OptionSpec("rooms", int, 2, "Number of rooms (the kitchen plus living room, bedroom).", minimum=1, maximum=3),
        OptionSpec(
            "task", str, "any", "Goal type: pick (place an object), clean, heat, cool, or any.", choices=("any", *TASKS)
        ),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seed_used = 0
        self.receptacles: list[dict[str, Any]] = []  # name, kind, room, open, contents
        self.objects: dict[str, dict[str, Any]] = {}  # name -> kind, clean, heat, cool
        self.goal: dict[str, Any] = {}
        self.location: str | None = None
        self.room = "kitchen"
        self.holding: str | None = None
        self.done = False

    # -- generation -------------------------------------------------------------------
    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.seed_used = seed
        rng = np.random.default_rng(seed)
        for _attempt in range(100):
            self._generate(rng)
            if not self._goal_satisfied():
                break
        adjective = ADJECTIVE.get(self.goal["task"], "")
        noun = f"{adjective} {self.goal['object']}".strip()
        preposition = "in" if RECEPTACLES[self.goal["target"]].container else "on"
        self.goal["text"] = f"put a {noun} {preposition} {self.goal['target']}"
        self.instruction = (
            f"Your task is to: {self.goal['text']}. Use exactly one of the admissible commands each turn: "
            "go to, open, close, take, put, clean, heat, cool, examine, inventory, look."
        )
        return self._look(), {"success": False}

    def _generate(self, rng: np.random.Generator) -> None:
        rooms = ["kitchen"] + list(rng.permutation(OPTIONAL_ROOMS)[: self.options["rooms"] - 1])
        counts: dict[str, int] = {}
        self.receptacles = []
        for room in rooms:
            for kind in ROOMS[room]:
                counts[kind] = counts.get(kind, 0) + 1
                self.receptacles.append(
                    {"name": f"{kind} {counts[kind]}", "kind": kind, "room": room, "open": False, "contents": []}
                )
        self.objects = {}
        kinds_here = [k for k, (_, where) in OBJECTS.items() if any(r in rooms for r in where)]
        picked = rng.choice(kinds_here, size=min(len(kinds_here), int(rng.integers(6, 10))), replace=False)
        object_counts: dict[str, int] = {}
        for kind in picked:
            for _ in range(int(rng.integers(1, 3))):
                object_counts[kind] = object_counts.get(kind, 0) + 1
                name = f"{kind} {object_counts[kind]}"
                self.objects[name] = {"kind": str(kind), "clean": False, "heat": False, "cool": False}
                homes = [
                    r
                    for r in self.receptacles
                    if r["room"] in OBJECTS[kind][1] and RECEPTACLES[r["kind"]].appliance is None
                ]
                homes[int(rng.integers(len(homes)))]["contents"].append(name)
        task_options = TASKS if self.options["task"] == "any" else (self.options["task"],)
        task = str(task_options[int(rng.integers(len(task_options)))])
        eligible = sorted({o["kind"] for o in self.objects.values() if task == "pick" or task in OBJECTS[o["kind"]][0]})
        if not eligible:  # no object of this world can take the property: fall back to placing one
            task, eligible = "pick", sorted({o["kind"] for o in self.objects.values()})
        target_kinds = sorted({r["kind"] for r in self.receptacles if RECEPTACLES[r["kind"]].appliance is None})
        self.goal = {
            "task": task,
            "object": eligible[int(rng.integers(len(eligible)))],
            "target": target_kinds[int(rng.integers(len(target_kinds)))],
        }
        self.location, self.room, self.holding, self.done = None, "kitchen", None, False

    # -- helpers ------------------------------------------------------------------------
    def _receptacle(self, name: str) -> dict[str, Any]:
        return next(r for r in self.receptacles if r["name"] == name)

    def _accessible(self, receptacle: dict[str, Any]) -> bool:
        return not RECEPTACLES[receptacle["kind"]].openable or receptacle["open"]

    def _where(self, obj: str) -> dict[str, Any] | None:
        return next((r for r in self.receptacles if obj in r["contents"]), None)

    def _fits_goal(self, obj: str) -> bool:
        record = self.objects[obj]
        task = self.goal["task"]
        return record["kind"] == self.goal["object"] and (task == "pick" or record[task])

    def _goal_satisfied(self) -> bool:
        return any(
            r["kind"] == self.goal["target"] and any(self._fits_goal(o) for o in r["contents"])
            for r in self.receptacles
        )

    @staticmethod
    def _list(names: list[str]) -> str:
        if not names:
            return "nothing"
        items = [f"a {n}" for n in names]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f", and {items[-1]}"

    def _describe(self, receptacle: dict[str, Any]) -> str:
        name = receptacle["name"]
        if not self._accessible(receptacle):
            return f"The {name} is closed."
        kind = RECEPTACLES[receptacle["kind"]]
        where = "In" if kind.container else "On"
        state = f"The {name} is open. " if kind.openable else ""
        return f"{state}{where} the {name}, you see {self._list(receptacle['contents'])}."

    def _look(self) -> str:
        if self.location is None:
            here = [r["name"] for r in self.receptacles if r["room"] == self.room]
            elsewhere = sorted({r["room"] for r in self.receptacles} - {self.room})
            others = f" Other rooms: {', '.join(elsewhere)}." if elsewhere else ""
            return f"You are in the middle of the {self.room}. Looking quickly around you, you see {self._list(here)}.{others}"
        return f"You are in the {self.room}, at the {self.location}. " + self._describe(self._receptacle(self.location))

    # -- admissible commands ---------------------------------------------------------------
    def valid_actions(self) -> list[str]:
        actions = [f"go to {r['name']}" for r in self.receptacles if r["name"] != self.location]
        if self.location is not None:
            here = self._receptacle(self.location)
            kind = RECEPTACLES[here["kind"]]
            if kind.openable:
                actions.append(f"{'close' if here['open'] else 'open'} {here['name']}")
            if self._accessible(here):
                if self.holding is None:
                    actions += [f"take {o} from {here['name']}" for o in here["contents"]]
                else:
                    actions.append(f"put {self.holding} {'in' if kind.container else 'on'} {here['name']}")
            if self.holding is not None and kind.appliance in OBJECTS[self.objects[self.holding]["kind"]][0]:
                actions.append(f"{kind.appliance} {self.holding} with {here['name']}")
            actions.append(f"examine {here['name']}")
        if self.holding is not None:
            actions.append(f"examine {self.holding}")
        return actions + ["inventory", "look"]

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return "The task is already done.", 0.0, True, False, {"success": True}
        verb, _, rest = action.partition(" ")
        if verb == "go":
            target = self._receptacle(rest[len("to ") :])
            moved_room = target["room"] != self.room
            self.location, self.room = target["name"], target["room"]
            prefix = f"You walk to the {self.room}. " if moved_room else ""
            observation = f"{prefix}You arrive at the {target['name']}. " + self._describe(target)
        elif verb in ("open", "close"):
            target = self._receptacle(rest)
            target["open"] = verb == "open"
            observation = (
                f"You open the {rest}. " + self._describe(target) if verb == "open" else f"You close the {rest}."
            )
        elif verb == "take":
            obj, _, source = rest.partition(" from ")
            self._receptacle(source)["contents"].remove(obj)
            self.holding = obj
            observation = f"You pick up the {obj} from the {source}."
        elif verb == "put":
            obj = self.holding
            assert obj is not None and self.location is not None
            self._receptacle(self.location)["contents"].append(obj)
            self.holding = None
            preposition = "in" if RECEPTACLES[self._receptacle(self.location)["kind"]].container else "on"
            observation = f"You put the {obj} {preposition} the {self.location}."
        elif verb in ("clean", "heat", "cool"):
            obj, _, tool = rest.partition(" with ")
            self.objects[obj][verb] = True
            observation = f"You {verb} the {obj} using the {tool}."
        elif verb == "examine":
            if rest in self.objects:
                record = self.objects[rest]
                states = [ADJECTIVE[p] for p in ("clean", "heat", "cool") if record[p]]
                observation = f"This is a {' '.join(states + [record['kind']])} ({rest})."
            else:
                observation = self._describe(self._receptacle(rest))
        elif verb == "inventory":
            observation = f"You are carrying: a {self.holding}." if self.holding else "You are not carrying anything."
        else:  # look
            observation = self._look()
        if self._goal_satisfied():
            self.done = True
            return observation + " Task complete!", 1.0, True, False, {"success": True}
        return observation, 0.0, False, False, {"success": False}

    def probe_targets(self) -> dict[str, float | int | str]:
        """Where the agent is (room, and the receptacle it stands at), what it holds, and the expert's next action."""
        return {
            "room": self.room,
            "location": self.location or "none",
            "held_object": self.objects[self.holding]["kind"] if self.holding is not None else "none",
            "expert_action": self.expert_action(),
        }

    def subgoals(self) -> dict[str, bool] | None:
        """An object of the goal's kind found (held, or the goal met), given the property (clean, hot,
        cool) if the task asks for one, and the goal met."""
        kind, task, met = self.goal["object"], self.goal["task"], self._goal_satisfied()
        held = self.holding is not None and self.objects[self.holding]["kind"] == kind
        milestones = {f"a {kind} in hand": held or met}
        if task != "pick":
            milestones[f"a {ADJECTIVE[task]} {kind}"] = any(
                o["kind"] == kind and o[task] for o in self.objects.values()
            )
        milestones[self.goal["text"]] = met
        return milestones

    # -- expert ------------------------------------------------------------------------------
    def _open_or(self, receptacle: dict[str, Any], action: str) -> str:
        """Go to ``receptacle``, open it if needed, then ``action``."""
        if self.location != receptacle["name"]:
            return f"go to {receptacle['name']}"
        if not self._accessible(receptacle):
            return f"open {receptacle['name']}"
        return action

    def expert_action(self) -> str:
        if self.done:
            return "look"
        task = self.goal["task"]
        if self.holding is not None:
            obj = self.holding
            record = self.objects[obj]
            if record["kind"] != self.goal["object"]:  # holding something else (after a fork): put it down here
                if self.location is None:
                    return f"go to {self.receptacles[0]['name']}"
                here = self._receptacle(self.location)
                preposition = "in" if RECEPTACLES[here["kind"]].container else "on"
                return self._open_or(here, f"put {obj} {preposition} {here['name']}")
            if task != "pick" and not record[task]:
                appliance = next(r for r in self.receptacles if r["kind"] == APPLIANCE_FOR[task])
                if self.location != appliance["name"]:
                    return f"go to {appliance['name']}"
                return f"{task} {obj} with {appliance['name']}"
            target = next(r for r in self.receptacles if r["kind"] == self.goal["target"])
            preposition = "in" if RECEPTACLES[target["kind"]].container else "on"
            return self._open_or(target, f"put {obj} {preposition} {target['name']}")
        # Not holding: fetch an object of the goal kind (one that already has the property first).
        matching = sorted(
            (o for o in self.objects if self.objects[o]["kind"] == self.goal["object"]),
            key=lambda o: (not self._fits_goal(o), o),
        )
        for obj in matching:
            source = self._where(obj)
            if source is not None and source["kind"] != self.goal["target"]:
                return self._open_or(source, f"take {obj} from {source['name']}")
        obj = matching[0]  # every candidate already sits in a target receptacle, without the property
        source = self._where(obj)
        assert source is not None
        return self._open_or(source, f"take {obj} from {source['name']}")

    # -- snapshots -------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "receptacles": [{**r, "contents": list(r["contents"])} for r in self.receptacles],
            "objects": {name: dict(record) for name, record in self.objects.items()},
            "goal": dict(self.goal),
            "location": self.location,
            "room": self.room,
            "holding": self.holding,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.receptacles = [{**r, "contents": list(r["contents"])} for r in state["receptacles"]]
        self.objects = {name: dict(record) for name, record in state["objects"].items()}
        self.goal = dict(state["goal"])
        self.location, self.room, self.holding = state["location"], state["room"], state["holding"]
        self.last_observation = self._look()

    # -- frame ---------------------------------------------------------------------------------------
    def _render_frame(self) -> np.ndarray:
        """A floor plan: one column per room, a box per receptacle with its visible contents."""
        frame = np.full((FRAME_H, FRAME_W, 3), (246, 244, 238), dtype=np.uint8)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(frame, f"Goal: {self.goal.get('text', '')}", (12, 24), font, 0.55, INK, 1, cv2.LINE_AA)
        carrying = self.holding or "nothing"
        cv2.putText(frame, f"Holding: {carrying}", (12, FRAME_H - 12), font, 0.5, INK, 1, cv2.LINE_AA)
        rooms = list(dict.fromkeys(r["room"] for r in self.receptacles))
        column_w = (FRAME_W - 12) // len(rooms)
        for column, room in enumerate(rooms):
            x0 = 6 + column * column_w
            border = (214, 55, 62) if room == self.room else (190, 190, 185)
            cv2.rectangle(frame, (x0, 36), (x0 + column_w - 6, FRAME_H - 30), border, 2)
            cv2.putText(frame, room, (x0 + 8, 56), font, 0.5, INK, 1, cv2.LINE_AA)
            members = [r for r in self.receptacles if r["room"] == room]
            row_h = min(34, (FRAME_H - 100) // max(1, len(members)))
            for index, receptacle in enumerate(members):
                y0 = 66 + index * row_h
                closed = not self._accessible(receptacle)
                fill = (205, 200, 190) if closed else (255, 255, 255)
                if receptacle["name"] == self.location:
                    fill = (250, 214, 214)
                cv2.rectangle(frame, (x0 + 6, y0), (x0 + column_w - 14, y0 + row_h - 4), fill, -1)
                cv2.rectangle(frame, (x0 + 6, y0), (x0 + column_w - 14, y0 + row_h - 4), (160, 160, 155), 1)
                contents = "closed" if closed else ", ".join(receptacle["contents"]) or "-"
                label = f"{receptacle['name']}: {contents}"
                max_chars = max(8, (column_w - 28) // 7)
                label = label if len(label) <= max_chars else label[: max_chars - 2] + ".."
                colour = MUTED if closed else INK
                cv2.putText(frame, label, (x0 + 12, y0 + row_h // 2 + 3), font, 0.4, colour, 1, cv2.LINE_AA)
        return frame


register_env(
    "household",
    Household,
    summary="ALFWorld-style household: find, clean, heat, cool and place objects.",
    default_max_steps=50,
)
