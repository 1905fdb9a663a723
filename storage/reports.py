"""What the store keeps beside an episode for its report (:class:`studio.viz.report.ReportExtras`)."""

from __future__ import annotations

from typing import Any

from agent_studio.storage.store import Store
from studio.viz.report import ReportExtras


def report_extras(store: Store, episode_id: str) -> ReportExtras:
    """What a store keeps beside an episode for its report: its step values, the cross-scores of the
    model that scored it last, and the judgements and step labels people and judges gave it
    (none of it need exist)."""
    scores = store.cross_scores.of_episode(episode_id)
    latest = max(scores, key=lambda score: score.created_at).scorer if scores else None
    judgements = []
    for pair in store.preferences.pairs(episode_id=episode_id):
        sides = {"left": _side_name(pair.left, episode_id), "right": _side_name(pair.right, episode_id)}
        for annotation in store.preferences.annotations(pair.id):
            verdict = {"tie": "a tie", "both_bad": "both bad"}.get(annotation.choice)
            judgements.append(
                {
                    "step": pair.step_index,
                    "compared": f"{sides['left']} vs {sides['right']}",
                    "annotator": annotation.annotator,
                    "verdict": verdict or f"{sides.get(annotation.choice, annotation.choice)} better",
                    "rationale": annotation.rationale,
                }
            )
    labels = [
        {"step": label.step_index, "annotator": label.annotator, "label": label.label, "note": label.note}
        for label in store.preferences.step_labels(episode_id)
    ]
    return ReportExtras(
        values=store.preferences.step_values(episode_id),
        cross_scores=[score for score in scores if score.scorer == latest],
        judgements=judgements,
        labels=labels,
    )


def _side_name(side: Any, episode_id: str) -> str:
    """A pair's side in words, from this episode's point of view."""
    if side.step_index is None:
        return "this episode" if side.episode_id == episode_id else f"episode {side.episode_id[:8]}"
    output = "the taken output" if side.candidate_id is None else "a candidate"
    return output if side.episode_id == episode_id else f"{output} of episode {side.episode_id[:8]}"
