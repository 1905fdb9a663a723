"""One schema for the settings of an episode and its policy: the CLI flags, the UI widgets and the
API parameters are all made from it (TRL's habit: one dataclass whose field metadata feeds
the docs and the command line).

Each field of :class:`EpisodeSettings` carries a :class:`Setting` (label, help, range, choices,
which widget, where it sits). Adding a setting is one field here and its use in
:func:`studio.policies.policy_from_settings` (the one place every surface makes its policy:
the Episode panel's session, ``run``, sweeps); ``agent-studio run`` gets ``--the-name``, the
Episode panel a widget, ``/reset`` a key.

The fields that every surface shows its own way (the environment, its options, the policy)
are marked ``custom``: they are in the schema, with their checks, but each surface draws them.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal

from studio.errors import StudioError
from studio.models.base import SamplingParams
from studio.plugins import RegisteredNames
from studio.scaling.verifier_registry import verifier_names
from studio.validation import MAX_ITEMS, MAX_OPTIONS_CHARS, MAX_SEED, parse_json, real_number, short_text, whole_number

Widget = Literal["number", "slider", "radio", "dropdown", "checkbox", "text", "json"]
Group = Literal["episode", "policy", "sampling", "verifier"]

#: The sampling defaults (one place: SamplingParams).
SAMPLING = SamplingParams()
#: K greedy candidates would be K copies of one text: asking for several samples at this
#: temperature unless a temperature is given (the CLI), or set in the UI when K goes above 1.
SAMPLING_FOR_CANDIDATES = 0.7


#: Who picks the action among a step's K outputs: every registered verifier
#: (:mod:`studio.scaling.verifier_registry`), read when first asked.
class _Verifiers(RegisteredNames):
    """The verifiers' names; ``model:NAME`` is one whenever NAME is spelled as a trained model's name (whether
    it is registered is checked when a policy is made: a stored sweep stays readable after its model goes)."""

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.startswith("model:"):
            from studio.training.spec import NAME  # late: trained models sit above the settings

            return bool(NAME.match(name[len("model:") :]))
        return super().__contains__(name)


VERIFIERS = _Verifiers(verifier_names)
#: Who acts in the rollouts of the ``mc`` verifier (``policy``: the model itself, sampled).
MC_ROLLOUT_POLICIES = ("random", "expert", "policy")


@dataclass(frozen=True)
class Setting:
    """What the surfaces need to know about one setting."""

    label: str
    help: str
    widget: Widget = "number"
    group: Group = "sampling"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    step: float | None = None
    real: bool = False
    """A real number (else a whole one)."""
    widget_minimum: float | None = None
    widget_maximum: float | None = None
    """A slider's end when the usual range is narrower than what is allowed."""
    custom: bool = False
    """Drawn by each surface itself (environment, options, policy), not generated."""
    cli: bool = True
    """Offered by ``agent-studio run`` (a flag named after the field)."""
    zero_means: str | None = None
    """What 0 stands for (``the environment's`` step limit): 0 is stored as None."""
    expected: str = ""
    """What a valid value is, for messages (``a seed from 0 to 2147483647``); made from the range if empty."""

    def expectation(self) -> str:
        """What a valid value is, in words."""
        if self.expected:
            return self.expected
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.widget == "checkbox":
            return "true or false"
        kind = "a number" if self.real else "a whole number"
        low, high = (_plain(v) for v in (self.minimum, self.maximum))
        if low is not None and high is not None:
            return f"{kind} from {low} to {high}"
        return f"{kind} >= {low}" if low is not None else kind

    def check(self, name: str, value: Any) -> Any:
        """``value`` (from a widget, an API call or the CLI) as the setting's type; one line if not."""
        what = self.label
        kind = self.widget
        if kind == "checkbox":
            if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
                return value.strip().lower() == "true"
            if not isinstance(value, bool):
                raise StudioError(f"{what} is true or false.")
            return value
        if kind == "json":
            text = short_text(value if value is not None else "", what, MAX_OPTIONS_CHARS) or "{}"
            parsed = (
                parse_json(text, f'{what} (a JSON object such as {{"size": 9}})') if isinstance(value, str) else value
            )
            if not isinstance(parsed, dict):
                raise StudioError(f'{what} must be a JSON object such as {{"size": 9}}.')
            return parsed
        if self.choices is not None and kind in ("radio", "dropdown") and all(isinstance(c, str) for c in self.choices):
            text = short_text(value, what)
            if text not in self.choices:
                raise StudioError(f"{what}: use one of {', '.join(self.choices)} (got {text[:40]!r}).")
            return text
        if kind == "text" or kind == "dropdown":
            return short_text(value, what)
        if self.real:
            return real_number(value, what, self.minimum, self.maximum)
        if value in (None, "") and self.zero_means:
            value = 0
        number = whole_number(
            value,
            what,
            int(self.minimum) if self.minimum is not None else None,
            int(self.maximum) if self.maximum is not None else None,
        )
        return None if self.zero_means and number == 0 else number


def _plain(value: float | None) -> str | None:
    """``2`` for 2.0, ``0.01`` for 0.01, None for None."""
    return None if value is None else f"{value:g}"


def setting(default: Any, label: str, help: str, **options: Any) -> Any:
    """A dataclass field with its :class:`Setting` (``default`` may be a list/dict: copied per instance)."""
    meta = {"setting": Setting(label=label, help=help, **options)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class EpisodeSettings:
    """What the next reset uses (and, for the policy fields, the next step)."""

    env: str = setting(
        "gridworld",
        "Environment",
        "a registered environment (agent-studio envs) or a family member such as gym:FrozenLake-v1",
        widget="dropdown",
        group="episode",
        custom=True,
        cli=False,
    )
    env_options: dict[str, Any] = setting(
        {},
        "Options",
        "the environment's options, a JSON object",
        widget="json",
        group="episode",
        custom=True,
        cli=False,
    )
    seed: int = setting(
        0,
        "Seed",
        "the episode's seed (run: of the first episode; episode k uses seed+k)",
        group="episode",
        minimum=0,
        maximum=MAX_SEED,
        expected=f"a seed from 0 to {MAX_SEED}",
    )
    policy: str = setting("react-a", "Policy", "who acts", widget="dropdown", group="policy", custom=True, cli=False)
    action_mode: str = setting(
        "generate",
        "Action mode",
        "generate the action, or score every valid action",
        widget="radio",
        group="policy",
        choices=("generate", "score"),
    )
    temperature: float = setting(
        SAMPLING.temperature,
        "Temperature (0 = greedy)",
        f"sampling temperature, 0 is greedy (run: {SAMPLING_FOR_CANDIDATES} when --candidates > 1 unless given)",
        widget="slider",
        minimum=0.0,
        maximum=2.0,
        step=0.05,
        real=True,
        expected="a temperature from 0 to 2",
    )
    top_p: float = setting(
        SAMPLING.top_p,
        "Top-p",
        "nucleus sampling mass",
        widget="slider",
        minimum=0.01,
        maximum=1.0,
        step=0.05,
        real=True,
        widget_minimum=0.05,
    )
    max_new_tokens: int = setting(
        SAMPLING.max_new_tokens,
        "Max new tokens",
        "tokens a model may write per step",
        widget="slider",
        minimum=1,
        maximum=4096,
        step=8,
        widget_minimum=8,
        widget_maximum=256,
    )
    candidates: int = setting(
        1,
        "Candidates K",
        "outputs sampled per step in one batch (the others are kept as candidates)",
        widget="slider",
        minimum=1,
        maximum=16,
        step=1,
        widget_maximum=8,
    )
    max_steps: int | None = setting(
        None,
        "Step limit (0 = the environment's)",
        "steps before the episode is cut",
        minimum=0,
        maximum=MAX_ITEMS,
        zero_means="the environment's",
    )
    few_shot: bool = setting(
        True, "Few-shot example", "show the model a short example episode in the prompt", widget="checkbox"
    )
    steer: str = setting(
        "",
        "Steering",
        "add a steering vector to the residual stream: NAME[:LAYERS]:ALPHA[:POSITIONS], e.g. explore:12:4 "
        "(agent-studio steer list; a sweep may vary ALPHA alone: --vary steer=0,2,4); empty: none",
        widget="text",
        group="policy",
    )
    record_activations: bool = setting(
        False,
        "Record activations",
        "keep each step's residual stream at its decision point (every layer, the last prompt token) in the "
        "activation cache, read by the step's own forward pass, for probes and vectors",
        widget="checkbox",
        group="policy",
    )

    verifier: str = setting(
        "first",
        "Verifier (best-of-K)",
        "who picks the action among the K outputs (with candidates > 1): first valid output; likelihood (the "
        "model's mean token logprob); vote (the action most outputs chose); mc (Monte Carlo value: rollouts after "
        "each action); judge (a model compares them: model B in the studio, --judge-model in run); oracle (the "
        "expert rolled out: a reference that needs the simulator)",
        widget="dropdown",
        group="verifier",
        choices=VERIFIERS,
    )
    mc_rollout_policy: str = setting(
        "random",
        "MC rollout policy",
        "who acts in the mc verifier's rollouts: random, expert, or policy (the acting model, sampled at "
        "temperature 1)",
        widget="dropdown",
        group="verifier",
        choices=MC_ROLLOUT_POLICIES,
    )
    mc_rollouts: int = setting(
        4, "MC rollouts per action", "rollouts after each distinct action (mc verifier)", group="verifier",
        minimum=1, maximum=64,
    )  # fmt: skip
    mc_horizon: int | None = setting(
        None,
        "MC horizon (0 = to the end)",
        "steps each mc rollout may take after the action",
        group="verifier",
        minimum=0,
        maximum=MAX_ITEMS,
        zero_means="to the end",
    )

    def policy_fields(self) -> tuple[Any, ...]:
        """The values that make two policies the same (every field but the environment's)."""
        return tuple(
            getattr(self, spec.name)
            for spec, _setting in schema(type(self))
            if spec.name not in ("env", "env_options", "seed", "max_steps")
        )


def schema(cls: type = EpisodeSettings) -> list[tuple[Any, Setting]]:
    """The fields of a settings class (``EpisodeSettings`` or a subclass) with their Setting, in order."""
    return [(spec, spec.metadata["setting"]) for spec in fields(cls) if "setting" in spec.metadata]


def default_of(spec: Any) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


def shown_default(spec: Any, setting: Setting) -> Any:
    """A setting's default as ``--help`` and the docs show it: what None stands for where it stands
    for something (``the environment's`` step limit), else the value."""
    default = default_of(spec)
    return setting.zero_means if default is None and setting.zero_means else default


def settings_from(
    values: dict[str, Any], cls: type = EpisodeSettings, base: EpisodeSettings | None = None
) -> EpisodeSettings:
    """Settings from named values (widgets, an API call, CLI flags): each checked by its Setting;
    names not given keep ``base``'s value (or the default). An unknown name is one line."""
    known = {spec.name: setting for spec, setting in schema(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise StudioError(f"Unknown setting {unknown[0][:40]!r}: use {', '.join(known)}.")
    checked = {name: known[name].check(name, value) for name, value in values.items()}
    if "env" in checked and not checked["env"]:
        checked["env"] = "gridworld"
    current = base if base is not None else cls()
    return replace(current, **checked)


def temperature_after(candidates: float, temperature: float) -> float | None:
    """The temperature the UI sets when Candidates K becomes ``candidates`` (None: leave it):
    K > 1 turns greedy sampling on; back to 1 turns the automatic value off again."""
    if candidates > 1 and temperature == 0:
        return SAMPLING_FOR_CANDIDATES
    if candidates <= 1 and math.isclose(temperature, SAMPLING_FOR_CANDIDATES):
        return 0.0
    return None


def default_temperature(candidates: int) -> float:
    """The temperature when none is given: greedy for one output, sampling for several."""
    return SAMPLING_FOR_CANDIDATES if candidates > 1 else 0.0
