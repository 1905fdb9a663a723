"""Failure analysis across many episodes, computed in SQL where it can be: invalid-action reasons,
repeated-action loops and value curves over the filtered episodes, each with episodes to click through.
Entropy curves read token records (compressed), so they use a sample of the newest episodes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from agent_studio.storage.db import Database
from agent_studio.storage.orm import EpisodeRow, StepRow, StepValueRow
from agent_studio.storage.search import EpisodeFilter, SearchStore


@dataclass
class Aggregates:
    """Failure analysis over filtered episodes, each count with examples to open (episode, step)."""

    episodes: int
    invalid_reasons: list[tuple[str, int, list[tuple[str, int]]]] = field(default_factory=list)
    loops: list[tuple[str, int, str]] = field(default_factory=list)
    """(episode, first step, action) where an action was taken three times in a row."""
    mean_value_by_step: list[tuple[int, float, int]] = field(default_factory=list)
    """(step index, mean Monte Carlo Q of the action taken, how many values)."""
    mean_entropy_by_step: list[tuple[int, float, int]] = field(default_factory=list)
    """(step index, mean per-token entropy of the output taken, how many steps), over a sample."""


#: Examples kept per reason, loops listed, episodes sampled for the entropy curve.
EXAMPLES, LOOPS, ENTROPY_SAMPLE = 5, 50, 200


def aggregates(database: Database, where: EpisodeFilter | None = None) -> Aggregates:
    """Counts and curves over the episodes ``where`` selects (:class:`~storage.search.Aggregates`)."""
    search = SearchStore(database)
    where = where or EpisodeFilter()
    scope = search.filtered(select(EpisodeRow.id), where).subquery()
    result = Aggregates(episodes=search.count(where))
    with database.reading() as session:
        reasons = session.execute(
            select(StepRow.invalid_reason, func.count().label("n"))
            .where(StepRow.episode_id.in_(select(scope.c.id)), StepRow.valid.is_(False))
            .group_by(StepRow.invalid_reason)
            .order_by(func.count().desc())
            .limit(20)
        ).all()
        for reason, count in reasons:
            examples = session.execute(
                select(StepRow.episode_id, StepRow.index)
                .where(
                    StepRow.episode_id.in_(select(scope.c.id)),
                    StepRow.valid.is_(False),
                    StepRow.invalid_reason == reason if reason is not None else StepRow.invalid_reason.is_(None),
                )
                .limit(EXAMPLES)
            ).all()
            result.invalid_reasons.append((reason or "(no reason given)", count, [(e, i) for e, i in examples]))
        result.loops = _loops(session, scope)
        values = session.execute(
            select(StepRow.index, func.avg(StepValueRow.q), func.count())
            .join(StepValueRow, StepValueRow.step_id == StepRow.id)
            .where(StepRow.episode_id.in_(select(scope.c.id)), StepValueRow.output == "taken")
            .group_by(StepRow.index)
            .order_by(StepRow.index)
        ).all()
        result.mean_value_by_step = [(int(i), float(q), int(n)) for i, q, n in values]
        result.mean_entropy_by_step = _entropy_curve(session, search, where)
    return result


def _loops(session: Any, scope: Any) -> list[tuple[str, int, str]]:
    """Steps whose action is the same as the two before it (window functions: SQLite 3.25+, PostgreSQL)."""
    previous = func.lag(StepRow.action, 1).over(partition_by=StepRow.episode_id, order_by=StepRow.index)
    before = func.lag(StepRow.action, 2).over(partition_by=StepRow.episode_id, order_by=StepRow.index)
    windowed = (
        select(StepRow.episode_id, StepRow.index, StepRow.action, previous.label("p1"), before.label("p2"))
        .where(StepRow.episode_id.in_(select(scope.c.id)))
        .subquery()
    )
    rows = session.execute(
        select(windowed.c.episode_id, windowed.c.index, windowed.c.action)
        .where(windowed.c.action.is_not(None), windowed.c.action == windowed.c.p1, windowed.c.action == windowed.c.p2)
        .order_by(windowed.c.episode_id, windowed.c.index)
        .limit(LOOPS * 20)
    ).all()
    first: dict[str, tuple[int, str]] = {}
    for episode_id, index, action in rows:
        first.setdefault(episode_id, (int(index) - 2, action))
    return [(e, i, a) for e, (i, a) in list(first.items())[:LOOPS]]


def _entropy_curve(session: Any, search: SearchStore, where: EpisodeFilter) -> list[tuple[int, float, int]]:
    sample = [s.id for s in search.page(where, limit=ENTROPY_SAMPLE)]
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for start in range(0, len(sample), 100):
        rows = session.execute(
            select(StepRow.index, StepRow.tokens).where(StepRow.episode_id.in_(sample[start : start + 100]))
        )
        for index, tokens in rows:
            values = [t.get("entropy") for t in tokens or [] if t.get("entropy") is not None]
            if values:
                sums[int(index)][0] += sum(values) / len(values)
                sums[int(index)][1] += 1
    return [(i, total / n, n) for i, (total, n) in sorted(sums.items())]
