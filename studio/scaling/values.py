"""Monte Carlo step values: Q(s, a) of each output of a step, estimated by rollouts from its snapshot.

For a stored step and each of its outputs (the one taken and every candidate), the environment
is restored to the step's snapshot (the state it acted in), the output's action is taken, and
``rollouts`` continuations are run from there with a rollout policy (the expert, random, or a
model) to the end of the episode or ``horizon`` steps. Q is the mean return from the step on
(the action's own reward plus the rollout's), with its standard error; the hard label says
whether any rollout succeeded and the soft label which fraction did (Math-Shepherd's two
labels). Every estimate carries how it was made (policy, rollouts, horizon, the seeds) so it
can be repeated exactly.

Rollouts fork from snapshots (no replay) and are never stored as episodes: only their returns,
successes and lengths are kept on the :class:`StepValue`. With ``parallel`` > 1 they run side
by side (:func:`studio.episodes.rollouts.run_parallel`): a model's calls decode in lockstep, and the
forks share the step's history in the model's cache, encoded once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from studio.agents.base import Policy
from studio.errors import StudioError
from studio.internals.vectors import steered_like
from studio.models.base import Backend
from studio.models.steered import steering_of
from studio.episodes.rollouts import run_parallel
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Episode

#: Makes the rollout policy for rollout number ``index`` acting with ``backend`` (the model given to
#: :func:`estimate_step_values`, or its lockstep member; None without a model): each rollout its own policy.
PolicyFactory = Callable[[int, "Backend | None"], Policy]
#: Called with (rollouts done, rollouts in all) as the estimate goes (a progress bar).
ValueProgress = Callable[[int, int], None]


def settings_name(
    rollout_policy: str, rollouts: int, horizon: int | None, discount: float = 1.0, max_steps: int | None = None
) -> str:
    """Value estimates' settings as a short name (``expert-m4-h5``): the MC labels' annotator name."""
    shown_horizon = "end" if horizon is None else f"h{horizon}"
    shown_discount = "" if discount == 1 else f"-g{discount:g}"
    limit = "" if max_steps is None else f"-s{max_steps}"
    return f"{rollout_policy}-m{rollouts}-{shown_horizon}{shown_discount}{limit}"


@dataclass
class StepValue:
    """Q(s, a) of one output of one step, and how it was estimated."""

    episode_id: str
    step_index: int
    output: str
    """``taken`` or ``candidate N`` (the names every view uses)."""
    action: str
    q: float
    """Mean return from this step on: the action's reward plus the rollout's (discounted) rewards."""
    stderr: float
    """Standard error of ``q`` (sample standard deviation / sqrt(rollouts); 0 for one rollout)."""
    hard: bool
    """At least one rollout succeeded (Math-Shepherd's hard estimate)."""
    soft: float
    """The fraction of rollouts that succeeded (the soft estimate)."""
    returns: list[float]
    successes: list[bool]
    lengths: list[int]
    """Steps each rollout took after the action."""
    rollout_policy: str
    rollouts: int
    horizon: int | None
    """Steps a rollout may take after the action (None: to the episode's end or step limit)."""
    seeds: list[int] = field(default_factory=list)
    """The rollout policies' seeds, in order: the same seeds give the same rollouts."""
    valid: bool = True
    """The output's action was valid (an invalid action leaves the state as it was)."""
    discount: float = 1.0
    """Returns are discounted: reward t steps after the action counts gamma**t (1: undiscounted,
    below 1: a shorter way to the goal is worth more)."""
    max_steps: int | None = None
    """The step limit the rollouts ended at, where it was not the episode's own (None: the episode's:
    a rollout from step 96 of a 100-step episode has 4 steps left, not 100)."""

    @property
    def settings(self) -> str:
        """The estimate's settings as a short name (``expert-m4-h5``): MC labels' annotator name."""
        return settings_name(self.rollout_policy, self.rollouts, self.horizon, self.discount, self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepValue:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


#: A model's rollouts are sampled (greedy rollouts would all be the same), each with its own seed.
ROLLOUT_SAMPLING = {"temperature": 1.0, "max_new_tokens": 64}
ROLLOUT_KINDS = ("expert", "random", "model")


def rollout_policy_factory(kind: str, seed: int = 0) -> PolicyFactory:
    """Rollout policies of ``kind`` (``expert``, ``random``, or ``model``: ReAct with the backend the
    rollout is given, sampled): rollout ``i`` gets its own, seeded ``seed + i``."""
    from studio.agents.scripted import make_policy

    kind = "model" if kind == "react" else kind  # the values command's name for model rollouts
    if kind == "random":
        return lambda index, _backend: make_policy("random", seed=seed + index)
    if kind == "expert":
        return lambda index, _backend: make_policy("expert")
    if kind != "model":
        raise StudioError(f"Unknown rollout policy {str(kind)[:40]!r}: use one of {', '.join(ROLLOUT_KINDS)}.")
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.models.base import SamplingParams

    def model_policy(index: int, backend: Backend | None) -> Policy:
        if backend is None:
            raise StudioError("Model rollouts need a model.")
        return ReActPolicy(backend, ReActConfig(sampling=SamplingParams(**ROLLOUT_SAMPLING, seed=seed + index)))

    return model_policy


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation over sqrt(n); 0 when n < 2)."""
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def estimate_step_values(
    episode: Episode,
    step_index: int,
    policy_for: PolicyFactory,
    *,
    rollout_policy: str,
    rollouts: int = 4,
    horizon: int | None = None,
    seed: int = 0,
    discount: float = 1.0,
    outputs: list[str] | None = None,
    max_steps: int | None = None,
    progress: ValueProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    model: Backend | None = None,
    parallel: int = 1,
) -> list[StepValue]:
    """Q of each output of step ``step_index`` (or of ``outputs``, by name) by ``rollouts`` rollouts.

    Rollout ``i`` of every output uses the policy ``policy_for(i, backend)`` seeded ``seed + i``, so
    the outputs are compared on the same rollout seeds (common random numbers: the differences
    between outputs are estimated with less noise than the values themselves). ``model``: the
    backend the policies act with (steered as the step was, when it was steered); with ``parallel``
    > 1, up to that many rollouts run in lockstep on it, and each gets the same result as alone.
    """
    if not 0 <= step_index < episode.length:
        raise StudioError(f"Episode {episode.id[:12]} has no step {step_index} (steps 0 to {episode.length - 1}).")
    if not isinstance(rollouts, int) or not 1 <= rollouts <= 1000:
        raise StudioError(f"Rollouts must be a whole number from 1 to 1000, got {str(rollouts)[:20]}.")
    if horizon is not None and (not isinstance(horizon, int) or horizon < 0):
        raise StudioError(f"The horizon must be a whole number of steps >= 0, got {str(horizon)[:20]}.")
    if not (isinstance(discount, (int, float)) and 0 < discount <= 1):
        raise StudioError(f"The discount must be a number in (0, 1], got {str(discount)[:20]}.")
    step = episode.steps[step_index]
    if step.state is None:
        raise StudioError(f"Step {step_index} has no environment snapshot: its values cannot be estimated.")
    if model is not None and steering_of(model) is None:  # a steered step's rollouts act as it did
        model = steered_like(model, step.extra.get("steering"))
    named = {output.name: output for output in step.outputs()}
    wanted = outputs or list(named)
    for name in wanted:
        if name not in named:
            raise StudioError(f"Step {step_index} has no output {name!r} (it has: {', '.join(named)}).")
    total, done = len(wanted) * rollouts, 0
    jobs = [
        _rollout_job(
            episode, step_index, named[name].action, policy_for, index, horizon, max_steps, float(discount), should_stop
        )  # fmt: skip
        for name in wanted
        for index in range(rollouts)
    ]

    def counted(_index: int, outcome: object) -> None:
        nonlocal done
        if isinstance(outcome, _Stopped):  # skipped after Stop: not a rollout done
            return
        done += 1
        if progress is not None:
            progress(done, total)

    outcomes = run_parallel(jobs, model, parallel, on_done=counted)
    stopped = [o for o in outcomes if isinstance(o, _Stopped)]
    if stopped:
        finished = sum(1 for o in outcomes if isinstance(o, tuple))
        raise StudioError(f"Stopped after {finished} of {total} rollouts: no values were kept.")
    for outcome in outcomes:
        if isinstance(outcome, StudioError):
            raise outcome
    values = []
    for number, name in enumerate(wanted):
        mine = outcomes[number * rollouts : (number + 1) * rollouts]
        returns = [o[0] for o in mine]
        successes = [o[1] for o in mine]
        q, stderr = mean_and_stderr(returns)
        values.append(
            StepValue(
                episode_id=episode.id,
                step_index=step_index,
                output=name,
                action=named[name].action or "",
                q=q,
                stderr=stderr,
                hard=any(successes),
                soft=sum(successes) / len(successes),
                returns=returns,
                successes=successes,
                lengths=[o[2] for o in mine],
                rollout_policy=rollout_policy,
                rollouts=rollouts,
                horizon=horizon,
                seeds=[seed + i for i in range(rollouts)],
                valid=all(o[3] for o in mine),
                discount=float(discount),
                max_steps=max_steps,
            )
        )
    return values


class _Stopped(StudioError):
    """A rollout saw Stop before it started."""


def _rollout_job(
    episode: Episode,
    step_index: int,
    action: str | None,
    policy_for: PolicyFactory,
    index: int,
    horizon: int | None,
    max_steps: int | None,
    discount: float,
    should_stop: Callable[[], bool] | None,
) -> Callable[[Backend | None], tuple[float, bool, int, bool]]:
    def job(backend: Backend | None) -> tuple[float, bool, int, bool]:
        if should_stop is not None and should_stop():
            raise _Stopped("stopped")
        return _rollout(
            episode, step_index, action, policy_for(index, backend), horizon, max_steps, discount, should_stop
        )

    return job


def _rollout(
    episode: Episode,
    step_index: int,
    action: str | None,
    policy: Policy,
    horizon: int | None,
    max_steps: int | None,
    discount: float,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[float, bool, int, bool]:
    """Return from the step on, success, steps after the action, and whether the action was valid
    (``should_stop`` is asked between steps: a model's rollout can be long)."""
    runner = EpisodeRunner(
        episode.env, policy, env_options=dict(episode.env_options), config=RunnerConfig(max_steps=max_steps)
    )
    rollout = runner.fork(episode, step_index, share_history=True)  # never stored: the history is only read
    first = runner.step(action=action or "")  # the output's own action, as a person would take it
    total = first.reward
    taken = 0
    while not rollout.done and (horizon is None or taken < horizon):
        if should_stop is not None and should_stop():
            raise _Stopped("stopped")
        taken += 1
        total += discount**taken * runner.step().reward
    return float(total), bool(rollout.success), taken, bool(first.valid)
