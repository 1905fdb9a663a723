"""Best-of-K coverage: how often an episode succeeds when each step's action is picked among K
sampled outputs, for several K over the same seeds (RoboMonkey's scaling plots).

With the ``oracle`` verifier this is the oracle coverage (could any of the K outputs lead to the
goal?); with a real verifier (``mc``, ``judge``, ``likelihood``, ``vote``) it is what best-of-K
buys at test time. The points are read from finished episodes (their policy settings say K and
the verifier), so stored episodes can be plotted again without running anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from studio.evaluation.stats import wilson_interval
from studio.trace import Episode


@dataclass(frozen=True)
class CoveragePoint:
    """The success rate of best-of-``k`` with ``verifier`` over ``episodes`` episodes."""

    verifier: str
    k: int
    successes: int
    episodes: int

    @property
    def rate(self) -> float:
        return self.successes / self.episodes

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval of the rate (sound at 0/n and n/n, unlike rate ± 2 s.e.)."""
        return wilson_interval(self.successes, self.episodes)

    def to_dict(self) -> dict[str, object]:
        low, high = self.interval
        return {"verifier": self.verifier, "k": self.k, "successes": self.successes, "episodes": self.episodes,
                "rate": self.rate, "low": low, "high": high}  # fmt: skip


def coverage_points(episodes: Iterable[Episode]) -> list[CoveragePoint]:
    """One point per (verifier, K) among finished episodes, in verifier then K order.

    K is the policy's ``candidates`` (1 for policies that sample one output); the verifier is
    ``first`` when none was set. Episodes that did not run to their end (running, stopped, abandoned)
    are left out: they have no outcome."""
    tally: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for episode in episodes:
        if not episode.complete:
            continue
        config = episode.policy_config or {}
        key = (str(config.get("verifier", "first")), int(config.get("candidates", 1)))
        tally[key][0] += bool(episode.success)
        tally[key][1] += 1
    return [CoveragePoint(verifier, k, wins, total) for (verifier, k), (wins, total) in sorted(tally.items())]
