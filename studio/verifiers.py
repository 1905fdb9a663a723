"""Best-of-K at test time: a verifier picks the action among a step's K sampled outputs.

:class:`VerifiedPolicy` wraps a policy that samples candidates (ReAct with ``candidates`` K):
after it decides, the verifier scores every valid output and the best one becomes the step's
output; the one the policy would have taken becomes a candidate, so nothing is lost and the
choice is recorded (``extra["verifier"]``: the verifier, each output's score, who won).

Verifiers:

- ``first``: the policy's own choice (the first valid output): no verifier.
- ``likelihood``: the policy's own confidence: the mean logprob of the tokens the model wrote.
- ``vote``: self-consistency: the action most outputs chose.
- ``oracle``: the environment's expert rolled out after each distinct action, discounted
  return (0.95 per step): an upper reference that needs the simulator (RoboMonkey's oracle
  coverage), not something a deployed agent has.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from studio.agents.base import Decision, Observation, StopCheck, never_stop
from studio.envs.base import StudioEnv
from studio.errors import StudioError
from studio.trace import Candidate, Episode, TokenInfo

VERIFIERS = ("first", "likelihood", "vote", "oracle")
#: The oracle's discount per step after the action: a shorter way to the goal scores higher.
ORACLE_DISCOUNT = 0.95


class VerifiedPolicy:
    """``policy`` with its action chosen among its K outputs by ``verifier``."""

    def __init__(self, policy: Any, verifier: str) -> None:
        if verifier not in VERIFIERS:
            raise StudioError(f"Unknown verifier {str(verifier)[:40]!r}: use one of {', '.join(VERIFIERS)}.")
        self.policy = policy
        self.verifier = verifier
        self.name = policy.name
        self.env: StudioEnv | None = None
        self.seed: int | None = None

    def __getattr__(self, name: str) -> Any:  # model_description, backend...: the wrapped policy's
        if name == "policy":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)

    def describe(self) -> dict[str, Any]:
        return {**self.policy.describe(), "verifier": self.verifier}

    def reset(self, env: StudioEnv, seed: int | None) -> None:
        self.policy.reset(env, seed)
        self.env, self.seed = env, seed

    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        decision = self.policy.act(episode, observation, should_stop)
        if self.verifier == "first" or not decision.candidates or decision.interrupted or self.env is None:
            return decision
        outputs = [_as_candidate(decision, self.env), *decision.candidates]
        scores = self.scores(outputs, episode)
        valid = [i for i, output in enumerate(outputs) if output.valid and scores[i] is not None]
        if not valid:
            return decision
        best = max(valid, key=lambda i: (scores[i], -i))  # ties: the policy's own order
        record = {"name": self.verifier, "scores": scores, "chosen": best}
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

    def scores(self, outputs: list[Candidate], episode: Episode) -> list[float | None]:
        """The verifier's score of each output (higher is better; None: not scored)."""
        if self.verifier == "likelihood":
            return [_mean_logprob(output.tokens) for output in outputs]
        if self.verifier == "vote":
            votes = Counter(output.action for output in outputs if output.valid)
            return [float(votes[output.action]) if output.valid else None for output in outputs]
        cache: dict[str, float] = {}
        return [self._oracle(output.action, episode, cache) if output.valid else None for output in outputs]

    def _oracle(self, action: str | None, episode: Episode, cache: dict[str, float]) -> float:
        """The expert's discounted return after ``action`` from the current state (once per action)."""
        if action is None:
            return float("-inf")
        if action not in cache:
            assert self.env is not None
            from studio.envs.registry import default_max_steps, env_at

            env = env_at(self.env.name, dict(self.env.options), self.seed, self.env.get_state())
            _obs, reward, terminated, truncated, _info = env.step(action)
            total, done, steps = float(reward), terminated or truncated, 0
            budget = default_max_steps(self.env) - episode.length - 1
            while not done and steps < budget:
                steps += 1
                _obs, reward, terminated, truncated, _info = env.step(env.expert_action())
                total += ORACLE_DISCOUNT**steps * float(reward)
                done = terminated or truncated
            cache[action] = total
        return cache[action]


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
