"""The rows of the built-in export formats: pairwise (``dpo``, ``reward``), ``kto``, ``prm``, ``sft``
and ``episodes``, each a generator of records over the store (registered in ``storage/export.py``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from agent_studio.storage.export_data import (
    AnnotatorSelection,
    EpisodeCache,
    ExportRow,
    ExportSummary,
    ImageWriter,
    Message,
    StepView,
    dumps,
    judged_pairs,
)
from agent_studio.storage.orm import AnnotatorRow, EpisodeRow, StepLabelRow, StepRow
from agent_studio.storage.records import STEP_LABELS
from agent_studio.storage.store import Store
from agent_studio.storage.vocab import majority
from studio.agents.conversation import continuation, fallback_prompt, output_text, prompt_at, step_text


def side_json(row: Any, side: str, cache: EpisodeCache, candidates: dict[str, Any]) -> bytes:
    """:func:`side_messages` as JSON, encoded once per output (an output is in several pairs)."""
    key = (
        (row.left_episode_id, row.left_candidate_id)
        if side == "left"
        else (row.right_episode_id, row.right_candidate_id)
    )
    key = (*key, row.step_index)
    found = cache.sides.get(key)
    if found is None:
        found = cache.sides[key] = dumps(side_messages(row, side, cache, candidates)).encode("utf-8")
    return found


def side_messages(row: Any, side: str, cache: EpisodeCache, candidates: dict[str, Any]) -> list[Message]:
    """One side of a pair as assistant turns."""
    episode_id = row.left_episode_id if side == "left" else row.right_episode_id
    candidate_id = row.left_candidate_id if side == "left" else row.right_candidate_id
    if row.kind == "trajectory":
        return continuation(cache.steps[episode_id])
    if candidate_id is not None:
        candidate = candidates[candidate_id]
        return [{"role": "assistant", "content": output_text(candidate.raw, candidate.action)}]
    step = cache.steps[episode_id][row.step_index]
    return [{"role": "assistant", "content": step_text(step)}]


def pair_prompt(row: Any, cache: EpisodeCache) -> tuple[StepView | list[Message], bytes | None]:
    """The shared context of a pair: the step whose stored prompt it is (or messages built from
    the record when no model took the step), and the frame of its observation."""
    index = 0 if row.kind == "trajectory" else row.step_index
    # A trajectory pair takes the prompt of whichever side a model played (they see the same task).
    for episode_id in (row.left_episode_id, row.right_episode_id):
        steps = cache.steps[episode_id]
        if steps and steps[index].prompt_json:
            return steps[index], steps[index].frame
    steps = cache.steps[row.left_episode_id]
    return fallback_prompt(cache.instructions[row.left_episode_id], steps, index), steps[index].frame


def prompt_messages(source: StepView | list[Message]) -> list[Message]:
    """The messages of a pair's prompt (see :func:`pair_prompt`)."""
    return source.prompt if isinstance(source, StepView) else source


def prompt_json(source: StepView | list[Message], cache: EpisodeCache, output: ImageWriter) -> bytes:
    """The prompt's JSON: a stored prompt spliced as it is (``full``), else encoded as the export writes it."""
    if isinstance(source, StepView) and not output.compact:
        return source.prompt_json
    return cache.encode(output.messages(prompt_messages(source)))


def pairwise_rows(
    store: Store, summary: ExportSummary, images: ImageWriter, implicit_prompt: bool
) -> Iterator[ExportRow]:
    """Preference rows: ``prompt``/``chosen``/``rejected`` (or whole conversations with an implicit prompt).

    Many pairs share a step's prompt: its stored JSON is spliced into each line as it is.
    """
    for row, choice, cache, candidates, rationales in judged_pairs(store, summary):
        if choice in ("tie", "both_bad"):
            summary.left_out[choice] = summary.left_out.get(choice, 0) + 1
            continue
        chosen, rejected = ("left", "right") if choice == "left" else ("right", "left")
        source, frame = pair_prompt(row, cache)
        context = prompt_json(source, cache, images)
        chosen_json, rejected_json = (
            side_json(row, chosen, cache, candidates),
            side_json(row, rejected, cache, candidates),
        )
        out = ExportRow()
        if implicit_prompt:
            head = context[:-1] + b","  # the prompt's messages, then the side's: one list
            out.add("chosen", encoded=head + chosen_json[1:]).add("rejected", encoded=head + rejected_json[1:])
        else:
            out.add("prompt", encoded=context).add("chosen", encoded=chosen_json).add("rejected", encoded=rejected_json)
        out.add("pair_id", row.id)  # provenance; TRL ignores columns it does not know
        out.add("rationales", rationales)  # the annotators' own words, verbatim
        image_paths = images(frame)
        if image_paths:
            summary.images += 1
            out.add("images", image_paths)
        yield out


def kto_records(store: Store, summary: ExportSummary, images: ImageWriter) -> Iterator[dict[str, Any]]:
    for row, choice, cache, candidates, _rationales in judged_pairs(store, summary):
        if choice == "tie":
            summary.left_out["tie"] = summary.left_out.get("tie", 0) + 1
            continue
        source, frame = pair_prompt(row, cache)
        prompt = images.messages(prompt_messages(source))
        labels = {
            "left": {"left": True, "right": False},
            "right": {"left": False, "right": True},
            "both_bad": {"left": False, "right": False},
        }[choice]
        for side in ("left", "right"):
            record = {
                "prompt": prompt,
                "completion": side_messages(row, side, cache, candidates),
                "label": labels[side],
                "source": f"pair:{row.id}",
            }
            _attach_images(record, images(frame), summary)
            yield record
    if summary.pairs is not None:
        return  # a campaign's export: its pairs only, not step labels
    for episode_id, steps, labels, cache in labelled_episodes(store, summary.selection):
        for step in steps:
            value = labels.get(step.index)
            if value is None or value == "neutral":
                continue
            record = {
                "prompt": images.messages(prompt_at(cache.instructions[episode_id], steps, step.index)),
                "completion": [{"role": "assistant", "content": step_text(step)}],
                "label": value,
                "source": f"step:{episode_id}:{step.index}",
            }
            _attach_images(record, images(step.frame), summary)
            yield record


def labelled_episodes(
    store: Store, selection: AnnotatorSelection | None = None
) -> Iterator[tuple[str, list[StepView], dict[int, Any], EpisodeCache]]:
    """Episodes with step labels: step index -> majority label value (True/False, or 'neutral'),
    over the labels of the annotators ``selection`` counts."""
    selection = selection or AnnotatorSelection()
    with store.db.reading() as orm_session:
        session = orm_session.connection()
        cast: dict[str, dict[int, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
        query = (
            select(StepRow.episode_id, StepRow.index, AnnotatorRow.name, StepLabelRow.label)
            .join(StepRow, StepRow.id == StepLabelRow.step_id)
            .join(AnnotatorRow, AnnotatorRow.id == StepLabelRow.annotator_id)
        )
        for episode_id, index, name, label in session.execute(query):
            cast[episode_id][index].append((name, label))
        votes = {
            episode_id: {
                index: [label for _name, label in selection.counted(ballots)] for index, ballots in steps.items()
            }
            for episode_id, steps in cast.items()
        }
        cache = EpisodeCache(session)
        for episode_id in cache.chunked(sorted(e for e, steps in votes.items() if any(steps.values()))):
            labels = {}
            for index, names in votes[episode_id].items():
                if not names:
                    continue
                value = majority("neutral" if STEP_LABELS[n] is None else str(STEP_LABELS[n]) for n in names)
                labels[index] = {"True": True, "False": False}.get(value, value)
            yield episode_id, cache.steps[episode_id], labels, cache


def prm_records(store: Store, summary: ExportSummary, images: ImageWriter) -> Iterator[dict[str, Any]]:
    for episode_id, steps, labels, cache in labelled_episodes(store, summary.selection):
        completions, values = [], []
        for step in steps:
            value = labels.get(step.index)
            if value is None:  # unlabelled, or annotators split evenly: the labelled prefix ends here
                break
            seen = f"Observation: {step.observation}\n" if step.index else ""
            completions.append(seen + step_text(step))
            values.append(True if value == "neutral" else bool(value))
        if not completions:
            summary.left_out["no_labelled_first_step"] = summary.left_out.get("no_labelled_first_step", 0) + 1
            continue
        prompt = f"Task: {cache.instructions[episode_id]}\nObservation: {steps[0].observation}"
        record = {"prompt": prompt, "completions": completions, "labels": values, "episode_id": episode_id}
        _attach_images(record, images(steps[0].frame), summary)
        yield record


def sft_records(store: Store, summary: ExportSummary, images: ImageWriter) -> Iterator[dict[str, Any]]:
    """Successful episodes as conversations (``messages``): the last step's prompt as the model saw it
    (its history included), then its output; for episodes no model played, the chat built from the
    record, outputs in the policy's format."""
    with store.db.reading() as orm_session:
        session = orm_session.connection()
        query = select(EpisodeRow.id, EpisodeRow.success).order_by(EpisodeRow.started_at, EpisodeRow.id)
        rows = session.execute(query).all()
        chosen = [episode_id for episode_id, success in rows if success]
        if len(chosen) < len(rows):
            summary.left_out["not_successful"] = len(rows) - len(chosen)
        cache = EpisodeCache(session)
        for episode_id in cache.chunked(chosen):
            steps = cache.steps[episode_id]
            if not steps:
                continue
            last = steps[-1]
            prompt = images.messages(prompt_at(cache.instructions[episode_id], steps, last.index))
            record = {
                "messages": [*prompt, {"role": "assistant", "content": step_text(last)}],
                "episode_id": episode_id,
            }
            _attach_images(record, images(last.frame), summary)
            yield record


def episode_records(store: Store, summary: ExportSummary) -> Iterator[dict[str, Any]]:
    with store.db.reading() as session:
        ids = session.scalars(select(EpisodeRow.id).order_by(EpisodeRow.started_at, EpisodeRow.id)).all()
    for episode_id in ids:
        yield store.episodes.get(episode_id).to_dict()


def _attach_images(record: dict[str, Any], paths: list[str] | None, summary: ExportSummary) -> None:
    if paths:
        record["images"] = paths
        summary.images += 1
