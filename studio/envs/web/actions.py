"""Web actions: BrowserGym's high-level action strings, parsed and checked before anything runs.

An action is one call, ``click('13')``, ``fill('7', 'hello')``, ``mouse_click(120, 48.5)``. BrowserGym
runs actions as Python (``exec``), so nothing a model or a web client wrote reaches it as written: the
text is parsed with :mod:`ast` as a single call of an allowed function with literal arguments, every
argument is checked (an element id must be on the page now, a point inside the screenshot, text
short), and what runs is the canonical string rebuilt from the checked values (``repr`` of each).

Navigation (``goto``), file uploads and tabs are never offered: a shared studio must not let a model
open ``file:///etc/passwd`` or send a local file to a page.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

#: What each argument of an action is: an element id, a point's coordinate, text, a key, a number...
Param = tuple[str, str, Any]  # (name, kind, default or REQUIRED)
REQUIRED = object()
BUTTONS = ("left", "middle", "right")
MODIFIERS = ("Alt", "Control", "ControlOrMeta", "Meta", "Shift")
MAX_TEXT = 1_000
MAX_KEY = 50
MAX_WAIT_MS = 5_000
MAX_SCROLL = 10_000

#: Every action the studio runs, with its arguments (BrowserGym's names and order).
ACTIONS: dict[str, tuple[Param, ...]] = {
    "noop": (("wait_ms", "wait", 1000),),
    "click": (("bid", "bid", REQUIRED), ("button", "button", "left"), ("modifiers", "modifiers", [])),
    "dblclick": (("bid", "bid", REQUIRED), ("button", "button", "left"), ("modifiers", "modifiers", [])),
    "fill": (("bid", "bid", REQUIRED), ("value", "text", REQUIRED)),
    "select_option": (("bid", "bid", REQUIRED), ("options", "options", REQUIRED)),
    "hover": (("bid", "bid", REQUIRED),),
    "press": (("bid", "bid", REQUIRED), ("key_comb", "key", REQUIRED)),
    "focus": (("bid", "bid", REQUIRED),),
    "clear": (("bid", "bid", REQUIRED),),
    "drag_and_drop": (("from_bid", "bid", REQUIRED), ("to_bid", "bid", REQUIRED)),
    "scroll": (("delta_x", "scroll", REQUIRED), ("delta_y", "scroll", REQUIRED)),
    "mouse_click": (("x", "x", REQUIRED), ("y", "y", REQUIRED), ("button", "button", "left")),
    "mouse_dblclick": (("x", "x", REQUIRED), ("y", "y", REQUIRED), ("button", "button", "left")),
    "mouse_move": (("x", "x", REQUIRED), ("y", "y", REQUIRED)),
    "mouse_down": (("x", "x", REQUIRED), ("y", "y", REQUIRED), ("button", "button", "left")),
    "mouse_up": (("x", "x", REQUIRED), ("y", "y", REQUIRED), ("button", "button", "left")),
    "keyboard_press": (("key", "key", REQUIRED),),
    "keyboard_type": (("text", "text", REQUIRED),),
}

#: The action subsets an environment offers (option ``actions``): by element id, by point, or both.
SUBSETS: dict[str, tuple[str, ...]] = {
    "bid": (
        "click",
        "dblclick",
        "fill",
        "select_option",
        "hover",
        "press",
        "focus",
        "clear",
        "drag_and_drop",
        "scroll",
        "noop",
    ),
    "coord": (
        "mouse_click",
        "mouse_dblclick",
        "mouse_move",
        "mouse_down",
        "mouse_up",
        "keyboard_press",
        "keyboard_type",
        "scroll",
        "noop",
    ),
}
SUBSETS["all"] = tuple(dict.fromkeys(SUBSETS["bid"] + SUBSETS["coord"]))


@dataclass(frozen=True)
class PageFacts:
    """What checking an action needs from the page now: its element ids and the screenshot's size."""

    bids: frozenset[str]
    width: int
    height: int


@dataclass(frozen=True)
class WebAction:
    """A checked action: its name, its arguments (by name) and the canonical text that runs."""

    name: str
    arguments: dict[str, Any]
    text: str

    @property
    def target_bids(self) -> list[str]:
        """The element ids it acts on (none for a point or a key)."""
        return [str(value) for (name, kind, _), value in _paired(self) if kind == "bid"]

    @property
    def point(self) -> tuple[float, float] | None:
        """The point it acts at (screenshot pixels), for the point actions."""
        if "x" in self.arguments and "y" in self.arguments:
            return float(self.arguments["x"]), float(self.arguments["y"])
        return None


def _paired(action: WebAction) -> list[tuple[Param, Any]]:
    return [(param, action.arguments[param[0]]) for param in ACTIONS[action.name] if param[0] in action.arguments]


class ActionRefused(ValueError):
    """The action cannot run; the message says why, in one sentence."""


def parse_action(text: str, allowed: tuple[str, ...], page: PageFacts) -> WebAction:
    """Parse and check ``text`` (one call) against the ``allowed`` action names and ``page``.

    Raises :class:`ActionRefused` with the reason (never anything else) when it cannot run."""
    source = _unwrap(text)
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ActionRefused(f"'{_short(source)}' is not an action call like click('13').") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ActionRefused(f"'{_short(source)}' is not an action call like click('13').")
    name = call.func.id
    if name not in allowed:
        raise ActionRefused(f"'{name}' is not an action here (allowed: {', '.join(allowed)}).")
    params = ACTIONS[name]
    given = _arguments(call, name, params)
    arguments = {pname: _check(name, pname, kind, given[pname], page) for pname, kind, _ in params if pname in given}
    shown = [repr(arguments[pname]) for pname, _kind, default in params if pname in arguments]
    # Trailing defaults are left out, so the same action always has the same text.
    while len(shown) > 1 and _is_default(params[len(shown) - 1], arguments):
        shown.pop()
        arguments.pop(params[len(shown)][0])
    return WebAction(name, arguments, f"{name}({', '.join(shown)})")


def _is_default(param: Param, arguments: dict[str, Any]) -> bool:
    pname, _kind, default = param
    return default is not REQUIRED and arguments.get(pname) == default


def _unwrap(text: str) -> str:
    """The call inside what a model wrote: stripped of spaces, backticks and a trailing semicolon."""
    source = text.strip(" \t\r\n`;")
    if source.startswith("python\n"):
        source = source[len("python\n") :]
    return source.strip(" \t\r\n`;")


def _arguments(call: ast.Call, name: str, params: tuple[Param, ...]) -> dict[str, Any]:
    """The call's arguments by name, each a literal; every required one present, nothing unknown."""
    names = [pname for pname, _kind, _default in params]
    if len(call.args) > len(params):
        raise ActionRefused(f"{name} takes at most {len(params)} arguments ({', '.join(names)}).")
    given: dict[str, Any] = {}
    for index, node in enumerate(call.args):
        given[names[index]] = _literal(node, name)
    for keyword in call.keywords:
        if keyword.arg is None or keyword.arg not in names:
            raise ActionRefused(f"{name} has no argument '{keyword.arg or '**'}' (it takes {', '.join(names)}).")
        if keyword.arg in given:
            raise ActionRefused(f"{name} got '{keyword.arg}' twice.")
        given[keyword.arg] = _literal(keyword.value, name)
    for pname, _kind, default in params:
        if pname not in given:
            if default is REQUIRED:
                raise ActionRefused(f"{name} needs '{pname}' ({', '.join(names)}).")
            given[pname] = default
    return given


def _literal(node: ast.expr, name: str) -> Any:
    if isinstance(node, ast.Starred):
        raise ActionRefused(f"{name}'s arguments must be written out, not unpacked.")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise ActionRefused(f"{name}'s arguments must be plain values (text in quotes, numbers).") from None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _check(name: str, pname: str, kind: str, value: Any, page: PageFacts) -> Any:
    """``value`` checked for an argument of ``kind``, in its canonical type."""
    if kind == "bid":
        bid = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if bid is None or not bid.strip():
            raise ActionRefused(f"{name}'s {pname} must be an element id like '13'.")
        if bid not in page.bids:
            raise ActionRefused(f"there is no element [{_short(bid, 20)}] on the page now (element missing).")
        return bid
    if kind in ("text", "key"):
        limit = MAX_TEXT if kind == "text" else MAX_KEY
        if not isinstance(value, str) or len(value) > limit:
            raise ActionRefused(f"{name}'s {pname} must be text of at most {limit} characters.")
        if kind == "key" and not value.strip():
            raise ActionRefused(f"{name}'s {pname} must name a key, e.g. 'Enter'.")
        return value
    if kind in ("x", "y"):
        number, side = _number(value), page.width if kind == "x" else page.height
        if number is None or not 0 <= number < side:
            raise ActionRefused(
                f"{name}'s {pname} must be a number from 0 to {side - 1} (the screenshot is {page.width}x{page.height})."
            )
        return int(number) if number.is_integer() else round(number, 1)
    if kind in ("scroll", "wait"):
        number, limit = _number(value), MAX_SCROLL if kind == "scroll" else MAX_WAIT_MS
        low = -limit if kind == "scroll" else 0
        if number is None or not low <= number <= limit:
            raise ActionRefused(f"{name}'s {pname} must be a number from {low} to {limit}.")
        return int(number) if number.is_integer() else number
    if kind == "button":
        if value not in BUTTONS:
            raise ActionRefused(f"{name}'s button must be one of {', '.join(BUTTONS)}.")
        return value
    if kind == "modifiers":
        if not isinstance(value, list) or not all(item in MODIFIERS for item in value) or len(value) > len(MODIFIERS):
            raise ActionRefused(f"{name}'s modifiers must be a list of {', '.join(MODIFIERS)}.")
        return list(value)
    if kind == "options":
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(i, str) and len(i) <= MAX_TEXT for i in items)
        ):
            raise ActionRefused(f"{name}'s options must be an option's text or a list of them.")
        return value
    raise AssertionError(kind)  # pragma: no cover - every kind in ACTIONS is handled above


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(allowed: tuple[str, ...]) -> str:
    """The allowed actions as a prompt lists them: ``click(bid)``, ``fill(bid, value)``, ..."""
    parts = []
    for name in allowed:
        args = [pname if default is REQUIRED else f"{pname}={default!r}" for pname, _kind, default in ACTIONS[name]]
        parts.append(f"{name}({', '.join(args)})")
    return ", ".join(parts)
