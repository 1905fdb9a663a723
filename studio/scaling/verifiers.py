"""Best-of-K at test time: a verifier picks the action among a step's K sampled outputs.

:class:`VerifiedPolicy` wraps a policy that samples candidates (ReAct with ``candidates`` K):
after it decides, the verifier scores every valid output and the best one becomes the step's
output; the one the policy would have taken becomes a candidate, so nothing is lost and the
choice is recorded (``extra["verifier"]``: the verifier, each output's score, who won).

Verifiers:

- ``first``: the policy's own choice (the first valid output): no verifier.
- ``likelihood``: the policy's own confidence: the mean logprob of the tokens the model wrote.
- ``vote``: self-consistency: the action most outputs chose.
- ``mc``: the Monte Carlo value of each distinct action: M rollouts after it with a rollout policy
  (random, the expert, or the acting model sampled), mean discounted return
  (:func:`studio.scaling.values.estimate_step_values` on the live state: the same estimate the Values
  view stores).
- ``judge``: a model compares the distinct actions two by two, as it judges a queued pair
  (:func:`studio.scaling.judge.judge_pair`: blind, both orders); an action's score is its mean
  probability of being the better one.
- ``oracle``: the environment's expert rolled out after each distinct action, discounted
  return (0.95 per step): an upper reference that needs the simulator (RoboMonkey's oracle
  coverage), not something a deployed agent has.

``mc`` and ``judge`` are the expensive ones: when every valid output chose the same action there
is nothing to decide and they run nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from studio.agents.base import Decision, Observation, StopCheck, never_stop
from studio.envs.base import StudioEnv
from studio.errors import StudioError
from studio.models.base import Backend
from studio.settings import MC_ROLLOUT_POLICIES, EpisodeSettings
from studio.trace import TAKEN, Candidate, Episode, Step, TokenInfo

#: The oracle's and mc's discount per step after the action: a shorter way to the goal scores higher.
ORACLE_DISCOUNT = 0.95
#: mc rollouts of a model that run side by side (one batch per token).
MC_ROLLOUTS_AT_ONCE = 8


@dataclass(frozen=True)
class MonteCarlo:
    """How the ``mc`` verifier estimates each action's value."""

    rollout_policy: str = "random"
    """``random``, ``expert`` or ``policy`` (the acting model, sampled at temperature 1)."""
    rollouts: int = 4
    horizon: int | None = None
    """Steps a rollout may take after the action (None: to the end)."""
    discount: float = ORACLE_DISCOUNT


#: The oracle: one rollout of the (deterministic) expert after each action, to the end.
ORACLE = MonteCarlo(rollout_policy="expert", rollouts=1)


class VerifiedPolicy:
    """``policy`` with its action chosen among its K outputs by ``verifier``."""

    def __init__(
        self, policy: Any, verifier: str, *, judge: Backend | None = None, mc: MonteCarlo | None = None
    ) -> None:
        from studio.scaling.verifier_registry import get_verifier

        self.implementation = get_verifier(verifier)
        if self.implementation.needs_judge and (judge is None or not judge.capabilities.scoring):
            name = "no model" if judge is None else f"model {judge.card.id}"
            raise StudioError(f"The {verifier} verifier needs a model that can score text ({name} given).")
        mc = mc or MonteCarlo()
        if mc.rollout_policy not in MC_ROLLOUT_POLICIES:
            raise StudioError(
                f"Unknown mc rollout policy {str(mc.rollout_policy)[:40]!r}: use one of {', '.join(MC_ROLLOUT_POLICIES)}."
            )
        if verifier == "mc" and mc.rollout_policy == "policy" and getattr(policy, "backend", None) is None:
            raise StudioError("The mc verifier's rollout policy 'policy' needs a model-driven policy.")
        self.policy = policy
        self.verifier = verifier
        self.judge = judge
        self.mc = mc
        self.name = policy.name
        self.env: StudioEnv | None = None
        self.decision_prompt: list[dict[str, Any]] | None = None

    def __getattr__(self, name: str) -> Any:  # model_description, backend...: the wrapped policy's
        if name == "policy":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)

    def describe(self) -> dict[str, Any]:
        described = {**self.policy.describe(), "verifier": self.verifier}
        if self.verifier == "mc":
            described["mc"] = {"rollout_policy": self.mc.rollout_policy, "rollouts": self.mc.rollouts,
                               "horizon": self.mc.horizon, "discount": self.mc.discount}  # fmt: skip
        if self.implementation.needs_judge and self.judge is not None:
            described["judge"] = self.judge.card.id
        return described

    def reset(self, env: StudioEnv, seed: int | None) -> None:
        self.policy.reset(env, seed)
        self.env = env

    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        decision = self.policy.act(episode, observation, should_stop)
        if self.verifier == "first" or not decision.candidates or decision.interrupted or self.env is None:
            return decision
        outputs = [_as_candidate(decision, self.env), *decision.candidates]
        self.decision_prompt = decision.prompt  # what a trained verifier scores the outputs after
        try:
            scores = self.scores(outputs, episode, observation, should_stop)
        except StudioError:
            if should_stop():  # Stop during the rollouts or the judging: the step is dropped, as mid-generation
                return replace(decision, interrupted=True)
            raise
        valid = [i for i, output in enumerate(outputs) if output.valid and scores[i] is not None]
        if not valid:
            return decision
        best = max(valid, key=lambda i: (scores[i], -i))  # ties: the policy's own order
        # Scores in the step's order (taken first, then the candidates); the policy's own pick by name.
        ordered = [scores[best], *(score for i, score in enumerate(scores) if i != best)]
        record = {"name": self.verifier, "scores": ordered, "policy_pick": TAKEN if best == 0 else "candidate 1"}
        if best == 0:
            return replace(decision, extra={**decision.extra, "verifier": record})
        chosen = outputs[best]
        others = [output for i, output in enumerate(outputs) if i != best]
        return replace(
            decision,
            action=chosen.action,
            raw=chosen.raw,
            thought=chosen.thought,
            parse_error=None if chosen.valid else chosen.invalid_reason,
            tokens=chosen.tokens,
            candidates=others,
            extra={**decision.extra, "verifier": record},
        )

    def scores(
        self,
        outputs: list[Candidate],
        episode: Episode,
        observation: Observation | None = None,
        should_stop: StopCheck = never_stop,
    ) -> list[float | None]:
        """The verifier's score of each output (higher is better; None: not scored)."""
        return self.implementation.scores(self, outputs, episode, observation, should_stop)


def _as_candidate(decision: Decision, env: StudioEnv) -> Candidate:
    """The output the policy chose, as a candidate (its validity checked as the runner will)."""
    check = env.validate_action(decision.action) if decision.action is not None else None
    return Candidate(
        raw=decision.raw,
        thought=decision.thought,
        action=check.action if check is not None and check.valid else decision.action,
        valid=bool(check is not None and check.valid),
        invalid_reason=decision.parse_error or (check.reason if check is not None else None),
        tokens=decision.tokens,
    )


def _mean_logprob(tokens: list[TokenInfo] | None) -> float | None:
    written = [t.logprob for t in tokens or [] if t.origin == "model"]
    return sum(written) / len(written) if written else None


@dataclass
class _Side:
    """An output as the judge reads it (:class:`studio.scaling.judge.SideLike`)."""

    raw: str
    action: str | None
    valid: bool
    steps: list[Any] = field(default_factory=list)
    success: bool | None = None
    total_return: float | None = None

    @classmethod
    def of(cls, output: Candidate) -> _Side:
        return cls(raw=output.raw, action=output.action, valid=output.valid)


@dataclass
class _Pair:
    """Two outputs of the step being decided, as a queued step pair shows them (:class:`studio.scaling.judge.PairLike`)."""

    instruction: str
    history: list[Any]
    observation: str
    left: _Side
    right: _Side
    kind: str = "step"


def verified(policy: Any, settings: EpisodeSettings, judge: Backend | None = None) -> Any:
    """``policy`` with the verifier ``settings`` name (the policy itself for ``first``)."""
    if settings.verifier == "first":
        return policy
    mc = MonteCarlo(
        rollout_policy=settings.mc_rollout_policy, rollouts=settings.mc_rollouts, horizon=settings.mc_horizon
    )
    return VerifiedPolicy(policy, settings.verifier, judge=judge, mc=mc)


class First:
    """the policy's own choice, the first valid output (no verifier)"""

    name = "first"
    needs_judge = False

    def scores(
        self, verified: VerifiedPolicy, outputs: list[Candidate], episode: Episode,
        observation: Observation | None, should_stop: StopCheck,
    ) -> list[float | None]:  # fmt: skip
        return [0.0 if i == 0 else None for i, _ in enumerate(outputs)]


class Likelihood:
    """the policy's own confidence: the mean logprob of the tokens the model wrote"""

    name = "likelihood"
    needs_judge = False

    def scores(
        self, verified: VerifiedPolicy, outputs: list[Candidate], episode: Episode,
        observation: Observation | None, should_stop: StopCheck,
    ) -> list[float | None]:  # fmt: skip
        return [_mean_logprob(output.tokens) for output in outputs]


class Vote:
    """self-consistency: the action most outputs chose"""

    name = "vote"
    needs_judge = False

    def scores(
        self, verified: VerifiedPolicy, outputs: list[Candidate], episode: Episode,
        observation: Observation | None, should_stop: StopCheck,
    ) -> list[float | None]:  # fmt: skip
        votes = Counter(output.action for output in outputs if output.valid)
        return [float(votes[output.action]) if output.valid else None for output in outputs]


class _ByAction:
    """A verifier that values each distinct valid action and gives every output its action's value.
    One action leaves nothing to decide, so nothing runs (unless ``score_one``: a reference)."""

    name = ""
    needs_judge = False
    score_one = False

    def scores(
        self, verified: VerifiedPolicy, outputs: list[Candidate], episode: Episode,
        observation: Observation | None, should_stop: StopCheck,
    ) -> list[float | None]:  # fmt: skip
        actions = list(dict.fromkeys(o.action for o in outputs if o.valid and o.action is not None))
        if observation is None or not actions or (len(actions) < 2 and not self.score_one):
            return [None for _ in outputs]
        by_action = self.value_actions(verified, outputs, actions, episode, observation, should_stop)
        return [by_action[o.action] if o.valid and o.action in by_action else None for o in outputs]

    def value_actions(
        self, verified: VerifiedPolicy, outputs: list[Candidate], actions: list[str], episode: Episode,
        observation: Observation, should_stop: StopCheck,
    ) -> dict[str, float]:  # fmt: skip
        raise NotImplementedError


class MonteCarloValue(_ByAction):
    """Monte Carlo value of each distinct action: rollouts after it, mean discounted return"""

    name = "mc"

    def rollouts(self, verified: VerifiedPolicy) -> MonteCarlo:
        """How the actions are rolled out: the policy's Monte Carlo settings."""
        return verified.mc

    def value_actions(
        self, verified: VerifiedPolicy, outputs: list[Candidate], actions: list[str], episode: Episode,
        observation: Observation, should_stop: StopCheck,
    ) -> dict[str, float]:  # fmt: skip
        """Each action's Monte Carlo value from the live state (:func:`studio.scaling.values.estimate_step_values`
        on a copy of the episode whose last step is this one, its outputs the distinct actions).
        Rollout i is seeded ``1000 * step + i``: the same episode gives the same choices."""
        from studio.models.lockstep import LockstepMember
        from studio.scaling.values import estimate_step_values, rollout_policy_factory

        assert verified.env is not None
        settings = self.rollouts(verified)
        here = Step(
            index=episode.length,
            observation=observation.text,
            action=actions[0],
            raw=actions[0],
            state=verified.env.get_state(),
            candidates=[Candidate(raw=action, action=action) for action in actions[1:]],
        )
        pending = Episode(
            env=episode.env,
            seed=episode.seed,
            env_options=dict(episode.env_options),
            instruction=episode.instruction,
            steps=[*episode.steps, here],
        )
        kind = "model" if settings.rollout_policy == "policy" else settings.rollout_policy
        backend = getattr(verified.policy, "backend", None) if kind == "model" else None
        seed = 1000 * observation.step_index
        values = estimate_step_values(
            pending,
            here.index,
            rollout_policy_factory(kind, seed),
            rollout_policy=settings.rollout_policy,
            rollouts=settings.rollouts,
            horizon=settings.horizon,
            seed=seed,
            discount=settings.discount,
            should_stop=should_stop,
            model=backend,
            # Inside a lockstep pool (run --parallel) the rollouts join the pool's batches one by one.
            parallel=MC_ROLLOUTS_AT_ONCE if backend is not None and not isinstance(backend, LockstepMember) else 1,
        )
        return {value.action: value.q for value in values}


class Oracle(MonteCarloValue):
    """the expert rolled out after each action: a reference that needs the simulator"""

    name = "oracle"
    score_one = True

    def rollouts(self, verified: VerifiedPolicy) -> MonteCarlo:
        return ORACLE


class Judge(_ByAction):
    """a model compares the distinct actions two by two, blind, in both orders"""

    name = "judge"
    needs_judge = True

    def value_actions(
        self, verified: VerifiedPolicy, outputs: list[Candidate], actions: list[str], episode: Episode,
        observation: Observation, should_stop: StopCheck,
    ) -> dict[str, float]:  # fmt: skip
        """Each action's mean probability, by the judge, of being better than each other action
        (round robin; each action shown through the first output that chose it)."""
        from studio.scaling.judge import judge_pair

        assert verified.judge is not None
        shown = {action: next(o for o in outputs if o.valid and o.action == action) for action in actions}
        wins: dict[str, list[float]] = {action: [] for action in actions}
        for i, left in enumerate(actions):
            for right in actions[i + 1 :]:
                if should_stop():
                    raise StudioError("Stopped while judging.")
                pair = _Pair(
                    instruction=episode.instruction,
                    history=list(episode.steps),
                    observation=observation.text,
                    left=_Side.of(shown[left]),
                    right=_Side.of(shown[right]),
                )
                verdict = judge_pair(verified.judge, pair)
                wins[left].append(verdict.p_left)
                wins[right].append(1 - verdict.p_left)
        return {action: sum(p) / len(p) for action, p in wins.items()}


#: The built-in verifiers, in the order every surface lists them.
BUILT_IN = (First(), Likelihood(), Vote(), MonteCarloValue(), Judge(), Oracle())
