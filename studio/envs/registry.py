"""The environment registry: names -> factories, read by the CLI, the UI dropdowns and the API.

Adding an environment is one file that calls :func:`register_env` (the built-ins do exactly that
at the end of their modules), or, from another package, one entry point in the
``agent_studio.envs`` group naming a :class:`~studio.envs.base.StudioEnv` subclass, or a
:class:`~studio.envs.gym_adapter.GymFamily` for a package whose Gymnasium ids exist once it is imported::

    [project.entry-points."agent_studio.envs"]
    cooking = "my_package.cooking:CookingWorld"
    my-robots = "my_package.studio:ROBOTS"   # GymFamily(("Robot-",), "my_robots", "pip install my-robots")

A *family* is registered under a prefix ending in ``:`` (``gym:`` is one): its factory gets the
rest of the name (``gym:FrozenLake-v1`` -> ``"FrozenLake-v1"``) as its first argument.

The registry is the process's list of environment kinds (like Gymnasium's own registry):
filled at import, never per browser session.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from studio.envs.base import OptionSpec, StudioEnv
from studio.errors import BadOption, UnknownEnvironment
from studio.plugins import first_doc_line, load_entry_points
from studio.validation import MAX_OPTIONS_CHARS, check_json

#: Entry point group other packages register environments under.
ENTRY_POINT_GROUP = "agent_studio.envs"
#: Modules whose import registers the built-in environments (and the gym: family).
BUILTIN_MODULES = (
    "studio.envs.gridworld",
    "studio.envs.household",
    "studio.envs.wikihop",
    "studio.envs.gym_adapter",
    "studio.envs.textworld_express",
    "studio.envs.web.env",
)
DEFAULT_MAX_STEPS = 100


@dataclass(frozen=True)
class EnvInfo:
    """What the studio knows about an environment (or a family of them) before making one."""

    name: str
    """The name users type (``gridworld``), or a family's prefix (``gym:``)."""
    factory: Callable[..., StudioEnv]
    """Makes the environment from its options (a family's factory first takes the rest of the name)."""
    summary: str
    """One line for ``agent-studio envs`` and the UI."""
    default_max_steps: int = DEFAULT_MAX_STEPS
    """A step limit that leaves the expert plenty of room on every seed."""
    option_specs: tuple[OptionSpec, ...] = ()
    action_summary: str = ""
    expert: bool = False
    examples: tuple[str, ...] = ()
    """For a family: full names worth offering in a dropdown (``gym:FrozenLake-v1``)."""
    options_help: str = ""
    """For a family, whose options the studio cannot list: what they are."""
    member: str = "a name"
    """For a family: what follows the prefix (``a Gymnasium id``), for messages."""
    members: Callable[[], list[str]] | None = None
    """For a family that can list its names (``web:``: every MiniWoB++ task installed): how."""

    @property
    def family(self) -> bool:
        return self.name.endswith(":")

    def make(self, name: str, options: dict[str, Any]) -> StudioEnv:
        if not self.family:
            return self.factory(**options)
        member = name[len(self.name) :].strip()
        if not member:
            raise UnknownEnvironment(
                f"Give {self.member} after '{self.name}', e.g. {self.examples[0] if self.examples else self.name + 'NAME'}."
            )
        return self.factory(member, **options)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: name, summary, options, action space."""
        options = [spec.describe() for spec in self.option_specs]
        if self.family and self.options_help:
            options = [{"name": "<any>", "type": "json", "default": None, "help": self.options_help}]
        return {
            "name": f"{self.name}<id>" if self.family else self.name,
            "summary": self.summary,
            "options": options,
            "action_space": self.action_summary,
            "expert": self.expert,
            "default_max_steps": self.default_max_steps,
            "fork": self.fork_mode,
            **({"members": self.members()} if self.members is not None else {}),
        }

    @property
    def fork_mode(self) -> str:
        """How forks come back (``exact``, ``replay``, ``none``), where it is known before one is made;
        a family's members are probed the first time each is made (:mod:`studio.envs.fork_probe`)."""
        if self.family and getattr(self.factory, "__name__", "") == "make_gym":
            return "probed when first made"
        return str(getattr(self.factory, "fork_mode", "exact")) if isinstance(self.factory, type) else "exact"


class EnvRegistry:
    """Environments by name; families by prefix. Thread-safe; filled once per process."""

    def __init__(self) -> None:
        self._infos: dict[str, EnvInfo] = {}
        self._lock = threading.RLock()
        self._loaded = False

    def register(self, info: EnvInfo, replace: bool = False) -> EnvInfo:
        self._load()  # the built-ins come first, whoever registers first
        with self._lock:
            if info.name in self._infos and not replace and self._infos[info.name].factory is not info.factory:
                raise ValueError(
                    f"An environment named {info.name!r} is already registered (pass replace=True to replace it)."
                )
            self._infos[info.name] = info
        return info

    def unregister(self, name: str) -> None:
        with self._lock:
            self._infos.pop(name, None)

    def infos(self) -> list[EnvInfo]:
        """Every registered environment and family, built-ins first, in registration order."""
        self._load()
        with self._lock:
            infos = list(self._infos.values())
        # Built-ins first, in their own order (one of them may have been imported before the others).
        return sorted(infos, key=lambda info: _builtin_rank(info.factory))

    def find(self, name: str) -> EnvInfo | None:
        """The entry for ``name``: its own, else the family whose prefix it starts with."""
        self._load()
        with self._lock:
            if name in self._infos:
                return self._infos[name]
            families = [info for info in self._infos.values() if info.family and name.startswith(info.name)]
        return max(families, key=lambda info: len(info.name), default=None)

    def _load(self) -> None:
        """Import the built-ins, then the installed packages' entry points (once)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for module in BUILTIN_MODULES:
                importlib.import_module(module)
            load_entry_points(ENTRY_POINT_GROUP, _register_entry_point)


def _register_entry_point(point: Any, loaded: Any) -> None:
    """An ``agent_studio.envs`` entry point names an environment (a StudioEnv subclass or factory,
    registered under the entry point's name) or a family of Gymnasium ids that a package registers on
    import (a :class:`~studio.envs.gym_adapter.GymFamily` object: it registers itself)."""
    if not callable(loaded) and callable(getattr(loaded, "register", None)):
        loaded.register()
    else:
        register_env(point.name, loaded)


def _builtin_rank(factory: Callable[..., StudioEnv]) -> int:
    module = getattr(factory, "__module__", "")
    return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)


#: The process's environments.
REGISTRY = EnvRegistry()


def register_env(
    name: str,
    factory: Callable[..., StudioEnv],
    *,
    summary: str | None = None,
    default_max_steps: int | None = None,
    examples: tuple[str, ...] = (),
    options_help: str = "",
    member: str = "a name",
    action_summary: str | None = None,
    members: Callable[[], list[str]] | None = None,
    replace: bool = False,
) -> EnvInfo:
    """Make ``name`` an environment the CLI, the UI and the API offer.

    ``factory`` is a :class:`StudioEnv` subclass (its ``option_specs``, ``action_summary`` and
    expert are read from it; ``summary`` defaults to its docstring's first line and
    ``default_max_steps`` to its ``default_max_steps`` attribute) or any callable returning one.
    A name ending in ``:`` registers a family (see the module docstring); ``members`` lists its names
    where it can (``agent-studio envs`` prints them).
    """
    if not name or not name.strip() or name != name.strip() or len(name) > 100:
        raise ValueError(f"Not a usable environment name: {name!r}.")
    cls = factory if isinstance(factory, type) else None
    if cls is not None and issubclass(cls, StudioEnv) and not cls.name:
        cls.name = name  # its messages and episodes say the name it is known by
    return REGISTRY.register(
        EnvInfo(
            name=name,
            factory=factory,
            summary=summary or (first_doc_line(cls, name) if cls else name),
            default_max_steps=int(default_max_steps or getattr(cls, "default_max_steps", DEFAULT_MAX_STEPS)),
            option_specs=tuple(getattr(cls, "option_specs", ())),
            action_summary=action_summary or str(getattr(cls, "action_summary", "")),
            expert=bool(cls is not None and issubclass(cls, StudioEnv) and cls.provides_expert()),
            examples=examples,
            options_help=options_help,
            member=member,
            members=members,
        ),
        replace=replace,
    )


def parse_cli_value(text: str) -> Any:
    """A CLI option value: JSON when it parses (numbers, true/false, lists), else the string."""
    lowered = text.strip()
    if lowered.lower() in {"true", "false"}:
        return lowered.lower() == "true"
    if len(lowered) > MAX_OPTIONS_CHARS:
        raise BadOption(f"An option value has at most {MAX_OPTIONS_CHARS:,} characters.")
    try:
        value = json.loads(lowered)
    except json.JSONDecodeError:
        return text
    except RecursionError:
        raise BadOption("An option value is nested too deeply.") from None
    check_json(value, "the option value", max_depth=8)
    return value


def env_info(name: str) -> EnvInfo:
    """The registry entry for ``name``; UnknownEnvironment (one line, naming what is known) if none."""
    info = REGISTRY.find(name)
    if info is None:
        known = ", ".join(i.name for i in REGISTRY.infos() if not i.family) or "none"
        families = " or ".join(f"{i.name}<id>" for i in REGISTRY.infos() if i.family)
        raise UnknownEnvironment(
            f"Unknown environment '{name[:80]}'. Known: {known}" + (f", or {families}." if families else ".")
        )
    return info


def make_env(name: str, options: dict[str, Any] | None = None) -> StudioEnv:
    """Make environment ``name`` (a registered name or a family's ``prefix:member``) with ``options``.

    Raises UnknownEnvironment or BadOption with a one-sentence message on user errors.
    """
    info = env_info(name)
    env = info.make(name, dict(options or {}))
    if not info.family:
        env.name = name  # the name it was made by (one class may be registered under several)
    return env


def env_at(name: str, options: dict[str, Any] | None, seed: int | None, state: Any | None) -> StudioEnv:
    """Environment ``name`` as it was in snapshot ``state`` of an episode with ``seed`` (checked:
    the snapshot may come from a file; one line if it does not fit)."""
    env = make_env(name, options)
    env.rewind(seed, state)
    return env


def default_max_steps(env: str | StudioEnv) -> int:
    """The registered step limit of an environment (by name, or of an environment made); one the
    registry does not know gets its class's own limit (a name alone: the general default)."""
    name = env if isinstance(env, str) else env.name
    info = REGISTRY.find(name)
    if info is not None:
        return info.default_max_steps
    return DEFAULT_MAX_STEPS if isinstance(env, str) else env.default_max_steps


def env_names() -> list[str]:
    """Names to offer: every environment, then each family's examples."""
    infos = REGISTRY.infos()
    return [i.name for i in infos if not i.family] + [example for i in infos if i.family for example in i.examples]


def builtin_names() -> list[str]:
    """The environments this package ships (not families, not plugins): what the tests cover."""
    return [i.name for i in REGISTRY.infos() if not i.family and _builtin_rank(i.factory) < len(BUILTIN_MODULES)]


def describe_all() -> list[dict[str, Any]]:
    """Descriptions of every registered environment and family."""
    return [info.describe() for info in REGISTRY.infos()]


def option_limits(option: dict[str, Any]) -> str:
    """What values an option (as :func:`describe_all` gives it) takes, in words: `` (one of a, b)``,
    `` (1..20)``, or nothing (``agent-studio envs`` and the docs' reference)."""
    allowed = f" (one of {', '.join(map(str, option['choices']))})" if option.get("choices") else ""
    bounds = f" ({option['minimum']}..{option['maximum']})" if option.get("minimum") is not None else ""
    return allowed + bounds
