"""Model B's view of model A's outputs as HTML: each token coloured by how much more or less likely
B finds it than A did (:func:`studio.evaluation.crossscore.cross_score`), every string escaped."""

from __future__ import annotations

import math
from typing import Any

from studio.trace import Episode, Step
from studio.viz.html import esc, num, plural

#: The logprob difference (nats) at which a token is coloured fully (B much less or more likely).
DIFFERENCE_FULL = 4.0


def difference_colour(difference: float | None) -> str:
    """Red where model B finds a token less likely than model A did, green where more; clear when alike."""
    if difference is None or not math.isfinite(difference):
        return "transparent"
    strength = min(1.0, abs(difference) / DIFFERENCE_FULL)
    hue = 0 if difference < 0 else 120
    return f"hsla({hue},75%,50%,{0.06 + 0.6 * strength:.2f})"


def cross_score_html(step: Step, score: Any) -> str:
    """One step of model A's output in model B's tokens, coloured by B's minus A's logprob, with the
    step's totals and the action each model prefers (:class:`studio.evaluation.crossscore.CrossScore`)."""
    differences = score.token_differences(step)
    spans = "".join(
        f'<span class="as-tok" style="background:{difference_colour(d)}" '
        f'data-tip="{esc(f"B {t.logprob:.2f}" + ("" if d is None else f" · B − A {d:+.2f}"))}">{esc(t.text)}</span>'
        for t, d in zip(score.tokens, differences)
    )
    parts = [f"<b>Step {num(score.step_index)}</b>", f"B log P {num(score.total, '.2f')}"]
    if score.own_total is not None:
        parts.append(f"A log P {num(score.own_total, '.2f')}")
        parts.append(f"B − A {num(score.difference, '+.2f')}")
    line = " · ".join(parts)
    if score.preferred is not None:
        p = math.exp(score.action_logprobs[score.preferred]) if score.action_logprobs else None
        agree = "agrees" if score.preferred == score.action else "differs"
        line += (
            f"<br>A took <code>{esc(score.action)}</code> · B prefers <code>{esc(score.preferred)}</code>"
            f" ({num(100 * p, '.0f') if p is not None else '?'}%) · <span class='as-{agree}'>{agree}</span>"
        )
    return f'<div class="as-step"><div class="as-step-head">{line}</div><span class="as-tokens">{spans}</span></div>'


def cross_scores_html(episode: Episode, scores: list[Any]) -> str:
    """Every scored step of ``episode`` under one model B, with a legend."""
    if not scores:
        return ""
    steps = {step.index: step for step in episode.steps}
    agree = sum(s.preferred == s.action for s in scores if s.preferred is not None)
    judged = sum(s.preferred is not None for s in scores)
    head = (
        f'<div class="as-legend">Model <code>{esc(scores[0].scorer)}</code> scored {plural(len(scores), "step")} of this '
        f"episode. Token colour: B's minus A's logprob: "
        f'<span class="as-swatch" style="background:{difference_colour(-DIFFERENCE_FULL)}"></span> B would not have said it'
        f' → <span class="as-swatch" style="background:{difference_colour(DIFFERENCE_FULL)}"></span> B finds it likelier'
        + (f" · B prefers A's action at {num(agree)} of {num(judged)} steps" if judged else "")
        + "</div>"
    )
    cards = "".join(cross_score_html(steps[s.step_index], s) for s in scores if s.step_index in steps)
    return f'<div class="as-timeline">{head}{cards}</div>'
