"""Web tasks in a real Chromium: ``web:miniwob.click-button`` and every other BrowserGym task.

Needs the ``[web]`` extra (BrowserGym and the ``miniwob`` package, whose 125 MiniWoB++ task pages it
serves from disk: no server, no network) and a Chromium. What an agent gets:

- the instruction: the task's goal (``Click on the "no" button.``);
- the observation: the page's accessibility tree as text, one element a line with its id
  (``[13] button 'no'``), cut to ``page_chars`` characters, and what went wrong with the last
  action in words (the element is covered, hidden, disabled...: the cause, not only "timeout");
- the frame: the page's screenshot (with each element's id drawn on its box when ``marks`` is on:
  set-of-marks, for image models and for the eye);
- actions: BrowserGym's action calls, ``click('13')``, ``fill('7', 'text')``, ``mouse_click(x, y)``...,
  the subset chosen by ``actions`` (:mod:`studio.envs.web.actions`), each parsed and checked before it
  runs: an element id not on the page is an invalid action with its reason, never a browser error.

Success is the task's reward. Each environment has its own browser, driven by one thread whatever
thread steps it (:mod:`studio.envs.web.browser`). A browser that dies ends its episode in one line,
and the next reset starts a new one.

Forks replay: a page cannot be copied, so a snapshot is the actions since the reset, and restoring
one resets the task on its seed and takes them again, checking after each that the page's text is the
one recorded then; where it is not (a task with its own clock or randomness), the fork is refused.

Other BrowserGym benchmarks (``web:webarena.310``, ``web:workarena.servicenow.order-standard-laptop``,
``web:visualwebarena.12``) are made the same way once their package is installed and their servers
are configured as BrowserGym documents; they are not tested here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import weakref
from typing import Any

import numpy as np

from studio.analysis.screen import draw_marks
from studio.envs.base import ActionCheck, OptionSpec, StudioEnv
from studio.envs.registry import register_env
from studio.envs.web import actions as web_actions
from studio.envs.web.browser import (
    ACTORS,
    INSTALL,
    BrowserActor,
    adapt_browsergym,
    chromium_path,
    stop_thread_playwright,
)
from studio.envs.web.page import Box, element_at, element_boxes, explain_error, page_digest, page_text
from studio.errors import BadOption, StudioError, UnknownEnvironment

#: Actions a replayed snapshot may hold.
MAX_SNAPSHOT_ACTIONS = 200
#: Clicks score mode ranks at most (the interactive elements of a page, in id order).
MAX_SCORED = 64
#: Tasks offered in dropdowns (every MiniWoB++ task is listed by ``agent-studio envs``).
EXAMPLES = (
    "web:miniwob.click-button",
    "web:miniwob.click-link",
    "web:miniwob.enter-text",
    "web:miniwob.click-checkboxes",
    "web:miniwob.focus-text",
    "web:miniwob.click-dialog",
)


def miniwob_url() -> str:
    """Where the MiniWoB++ pages are: ``MINIWOB_URL`` when set, else the ``miniwob`` package's own copy."""
    if os.environ.get("MINIWOB_URL"):
        return os.environ["MINIWOB_URL"]
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownEnvironment(f"web:miniwob.* tasks need the miniwob package: {INSTALL}.")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "html", "miniwob")
    return "file://" + folder + "/"


def miniwob_tasks() -> list[str]:
    """Every MiniWoB++ task BrowserGym knows, as ``web:`` names (empty when it is not installed)."""
    try:
        from browsergym.miniwob import ALL_MINIWOB_TASKS
    except ImportError:
        return []
    return [f"web:{task.get_task_id()}" for task in ALL_MINIWOB_TASKS]


def check_task(task: str) -> None:
    """Refuse, in one line, a task BrowserGym does not have here (its benchmark's package missing, or
    no such task); imports and registry lookups only: no browser starts."""
    import gymnasium as gym

    adapt_browsergym()
    benchmark = task.split(".", 1)[0]
    if benchmark == "miniwob":
        os.environ.setdefault("MINIWOB_URL", miniwob_url())
    else:
        try:
            importlib.import_module(f"browsergym.{benchmark}")
        except ImportError:
            raise UnknownEnvironment(
                f"web:{task[:60]} needs BrowserGym's {benchmark} package (pip install browsergym-{benchmark}) "
                "and its servers, as BrowserGym documents."
            ) from None
    if f"browsergym/{task}" not in gym.registry:
        raise UnknownEnvironment(f"Unknown web task '{task[:80]}' (see agent-studio envs for the MiniWoB++ tasks).")


def _make_gym(task: str, options: dict[str, Any]) -> Any:
    """BrowserGym's environment for ``task`` (runs on the actor's thread; the task was checked)."""
    import gymnasium as gym

    executable = chromium_path()
    return gym.make(
        f"browsergym/{task}",
        headless=True,
        pre_observation_delay=options["wait"],
        pw_chromium_kwargs={"executable_path": executable} if executable else {},
    )


class WebTask(StudioEnv):
    """A BrowserGym web task in Chromium: the accessibility tree as text, the screenshot as the frame."""

    action_summary = "text: BrowserGym calls, click('13'), fill('7', 'text'), mouse_click(x, y), ... (option actions)"
    default_max_steps = 15
    fork_mode = "replay"
    fork_note = "a page cannot be copied: forks replay the actions from the seed and check each page on the way"
    success_rule = "success: the task's reward is positive when it ends"
    option_specs = (
        OptionSpec(
            "actions",
            str,
            "bid",
            "Which actions: bid (by element id), coord (by point on the screenshot) or all.",
            choices=tuple(web_actions.SUBSETS),
        ),
        OptionSpec(
            "page_chars",
            int,
            4000,
            "Characters of the page's accessibility tree an observation keeps.",
            None,
            200,
            100_000,
        ),
        OptionSpec("marks", bool, False, "Draw each element's id on its box in the frame (set-of-marks)."),
        OptionSpec(
            "wait", float, 0.5, "Seconds to let the page settle after an action before it is read.", None, 0.0, 5.0
        ),
    )

    def __init__(self, task: str, **options: Any) -> None:
        task = task.strip()
        if not task or len(task) > 120 or not all(c.isalnum() or c in ".-_" for c in task):
            raise UnknownEnvironment(f"'{task[:60]}' is not a web task name like miniwob.click-button.")
        self.name = f"web:{task}"  # type: ignore[misc]  # per-instance name
        super().__init__(**options)
        check_task(task)
        self.task = task
        self.allowed = web_actions.SUBSETS[self.options["actions"]]
        self._actor: BrowserActor = ACTORS.acquire()
        self._holder: dict[str, Any] = {"gym": None}  # the BrowserGym env, touched only on the actor's thread
        self._release = weakref.finalize(self, _give_back, self._actor, self._holder)
        self._observation: dict[str, Any] = {}
        self._elements: dict[str, Box] = {}
        self.actions_taken: list[str] = []
        self.pages: list[str] = []
        self.broken: str | None = None
        """Why the browser stopped, when it did (the episode ended there; the next reset starts another)."""

    # -- the browser, through the actor ----------------------------------------------------------
    def _browser(self, function: Any, *args: Any) -> Any:
        return self._actor.call(function, *args)

    def _gym_reset(self, seed: int) -> dict[str, Any]:
        """Reset on the actor's thread, making BrowserGym's environment first if needed."""
        holder = self._holder
        if holder["gym"] is None:
            holder["gym"] = _make_gym(self.task, self.options)
        observation, _info = holder["gym"].reset(seed=seed)
        return observation

    def _gym_step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        return self._holder["gym"].step(action)

    def _restart(self) -> None:
        """After a crash: close what is left of the browser and drop its Playwright (actor's thread)."""
        gym_env, self._holder["gym"] = self._holder["gym"], None
        if gym_env is not None:
            try:
                gym_env.close()
            except Exception:  # the browser is gone already
                pass
        stop_thread_playwright()

    # -- StudioEnv --------------------------------------------------------------------------------
    def _load(self, seed: int) -> str:
        if self.broken is not None:
            self._browser(self._restart)
            self.broken = None
        try:
            observation = self._browser(self._gym_reset, seed)
        except StudioError:
            raise
        except Exception as exc:  # Chromium missing, a page that does not load
            self._browser(self._restart)
            raise StudioError(f"{self.name} could not start its browser: {_one_line(exc)}") from None
        self.actions_taken, self.pages = [], []
        return self._read(observation)

    def _read(self, observation: dict[str, Any]) -> str:
        """Keep what the page shows now and return the observation text."""
        self._observation = observation
        screenshot = observation["screenshot"]
        height, width = screenshot.shape[:2]
        self._elements = element_boxes(observation.get("extra_element_properties") or {}, width, height)
        text, cut = page_text(observation["axtree_object"], observation.get("extra_element_properties") or {},
                              self.options["page_chars"])  # fmt: skip
        self.pages.append(page_digest(text))
        lines = [text]
        if cut:
            lines.append(f"... ({cut} more characters of the page cut: option page_chars)")
        focused = observation.get("focused_element_bid")
        if focused:
            lines.append(f"Focused element: [{focused}]")
        error = explain_error(observation.get("last_action_error", ""))
        if error:
            lines.append(f"The last action failed: {error}.")
        return "\n".join(lines)

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        observation = self._load(seed)
        self.instruction = str(self._observation.get("goal") or "").strip() or f"Do the task {self.task}."
        return observation, {"success": False}

    def _facts(self) -> web_actions.PageFacts:
        height, width = self.render_size()
        return web_actions.PageFacts(frozenset(self._elements), width, height)

    def render_size(self) -> tuple[int, int]:
        screenshot = self._observation.get("screenshot")
        return (0, 0) if screenshot is None else (int(screenshot.shape[0]), int(screenshot.shape[1]))

    def valid_actions(self) -> list[str] | None:
        return None  # calls with arguments: not a finite list

    def validate_action(self, action: str) -> ActionCheck:
        if not isinstance(action, str) or not action.strip():
            return ActionCheck(None, "The action is empty.")
        if self.broken is not None:
            return ActionCheck(None, f"The browser stopped ({self.broken}); reset to start another.")
        try:
            return ActionCheck(web_actions.parse_action(action, self.allowed, self._facts()).text)
        except web_actions.ActionRefused as refused:
            return ActionCheck(None, str(refused).rstrip(".") + ".")

    def action_help(self) -> str:
        return (
            web_actions.describe(self.allowed)
            + ". An element's id is the number in brackets before it on the page, e.g. click('13')."
        )

    def score_choices(self) -> list[str]:
        """A click on each interactive element (by id, or at its centre with the coord actions)."""
        marked = sorted((bid for bid, box in self._elements.items() if box[4]), key=_bid_order)[:MAX_SCORED]
        if "click" in self.allowed:
            return [f"click({bid!r})" for bid in marked]
        return [f"mouse_click({(b[0] + b[2]) // 2}, {(b[1] + b[3]) // 2})" for b in (self._elements[i] for i in marked)]

    def parsed(self, action: str) -> web_actions.WebAction:
        """A checked action's parts (its target elements, its point), for overlays and people."""
        return web_actions.parse_action(action, self.allowed, self._facts())

    def sample_action(self, rng: np.random.Generator) -> str:
        """A click on a random interactive element (by id, or at its centre with the coord actions)."""
        choices = self.score_choices() or ["noop(100)"]
        return choices[int(rng.integers(len(choices)))]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """:meth:`StudioEnv.step`; a refused action's info holds the page's elements too, so the step's
        other candidates (and a pair with it) can still be drawn where they act."""
        observation, reward, terminated, truncated, info = super().step(action)
        if "invalid_action" in info:
            info = {**info, "elements": dict(self._elements)}
        return observation, reward, terminated, truncated, info

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return "The task is over.", 0.0, True, False, {"success": False}
        parsed = self.parsed(action)
        acted_on = {"elements": dict(self._elements), "target": _target(parsed, self._elements)}
        try:
            observation, reward, terminated, truncated, info = self._browser(self._gym_step, parsed.text)
        except Exception as exc:  # the browser died under the action: the episode ends here, in one line
            self.broken = _one_line(exc)
            self.done = True
            note = f"browser stopped: {self.broken}"
            return f"The browser stopped ({self.broken}). The episode ends here.", 0.0, False, True, {
                **acted_on, "success": False, "end_reason": note
            }  # fmt: skip
        self.actions_taken.append(parsed.text)
        text = self._read(observation)
        self.done = bool(terminated or truncated)
        details = {**acted_on, "success": bool(terminated and reward > 0)}
        error = explain_error(observation.get("last_action_error", ""))
        if error:
            details["action_error"] = error
        if isinstance(info.get("task_info"), dict) and info["task_info"].get("REWARD_REASON"):
            details["reward_reason"] = str(info["task_info"]["REWARD_REASON"])[:200]
        return text, float(reward), bool(terminated), bool(truncated), details

    def _render_frame(self) -> np.ndarray:
        screenshot = self._observation.get("screenshot")
        if screenshot is None:
            return np.full((214, 332, 3), 255, dtype=np.uint8)  # before the first reset: a blank page
        frame = np.ascontiguousarray(screenshot[:, :, :3], dtype=np.uint8)
        return draw_marks(frame, self._elements) if self.options["marks"] else frame

    def elements(self) -> dict[str, Box]:
        """The visible elements now: id -> [x0, y0, x1, y1, marked] on the frame."""
        return dict(self._elements)

    def action_at(self, x: float, y: float) -> str | None:
        """What a person's click at (x, y) on the frame does: a click on the element under it (by id),
        or a click at the point with the coord actions (or where no element is under it)."""
        height, width = self.render_size()
        if not (0 <= x < width and 0 <= y < height):
            return None
        bid = element_at(self._elements, x, y)
        if bid is not None and "click" in self.allowed:
            return f"click({bid!r})"
        if "mouse_click" in self.allowed:
            return f"mouse_click({int(x)}, {int(y)})"
        return None

    def typed_action(self, text: str) -> str | None:
        """What a person's typing does: fill the focused field with it (None when no field has focus)."""
        focused = self._observation.get("focused_element_bid")
        if focused and focused in self._elements and "fill" in self.allowed:
            return f"fill({focused!r}, {text!r})"
        if "keyboard_type" in self.allowed:
            return f"keyboard_type({text!r})"
        return None

    def _get_state(self) -> dict[str, Any]:
        return {"actions": list(self.actions_taken), "pages": list(self.pages)}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Replay the snapshot's actions from its seed, checking each page against the recorded one."""
        actions, pages, seed = state.get("actions"), state.get("pages"), state.get("seed")
        if not isinstance(actions, list) or len(actions) > MAX_SNAPSHOT_ACTIONS:
            raise BadOption(f"This snapshot of {self.name} cannot be restored: its actions are not a short list.")
        if not isinstance(pages, list) or len(pages) != len(actions) + 1 or not all(isinstance(p, str) for p in pages):
            raise BadOption(f"This snapshot of {self.name} cannot be restored: it has no page for every action.")
        self._load(seed if isinstance(seed, int) else 0)
        self.done = False
        self._replayed(0, pages)
        for number, action in enumerate(actions, start=1):
            check = self.validate_action(action) if isinstance(action, str) else ActionCheck(None, "not text")
            if not check.valid or check.action != action:
                raise BadOption(
                    f"This snapshot of {self.name} cannot be restored: action {number} is not one it can take "
                    f"({check.reason or 'not in its canonical form'})"
                )
            self.last_observation, *_ = self._step(action)
            if self.broken is not None:
                raise BadOption(f"This snapshot of {self.name} cannot be restored: the browser stopped.")
            self._replayed(number, pages)

    def _replayed(self, number: int, pages: list[str]) -> None:
        if self.pages[-1] != pages[number]:
            where = "after the reset" if number == 0 else f"after action {number}"
            raise BadOption(
                f"{self.name} cannot be forked here: the replayed page differed from the recorded one {where} "
                "(the task has its own clock or randomness)"
            )

    def close(self) -> None:
        """Close the browser and hand the thread back to the pool (also done when the environment is dropped)."""
        self._release()


def _give_back(actor: BrowserActor, holder: dict[str, Any]) -> None:
    """Close an environment's browser on its thread, then pool the thread (a finalizer: no self)."""

    def close() -> None:
        gym_env, holder["gym"] = holder["gym"], None
        if gym_env is not None:
            try:
                gym_env.close()
            except Exception:  # a browser that died already
                pass

    try:
        actor.call(close, timeout=30)
    except Exception:  # a stuck browser: the thread is not reused
        actor.stop()
        return
    ACTORS.release(actor)


def _target(action: web_actions.WebAction, elements: dict[str, Box]) -> dict[str, Any]:
    """Where an action acts on the frame: its elements' boxes, or its point."""
    target: dict[str, Any] = {"action": action.name}
    bids = action.target_bids
    if bids:
        target["bids"] = bids
        target["boxes"] = [elements[bid][:4] for bid in bids if bid in elements]
    if action.point is not None:
        target["point"] = list(action.point)
    return target


def _bid_order(bid: str) -> tuple[int, str]:
    return (int(bid), bid) if bid.isdigit() else (1 << 30, bid)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


register_env(
    "web:",
    WebTask,
    summary="Web tasks in Chromium through BrowserGym (the [web] extra), e.g. web:miniwob.click-button; "
    "every MiniWoB++ task works offline.",
    default_max_steps=15,
    examples=EXAMPLES,
    member="a BrowserGym task",
    members=miniwob_tasks,
)
