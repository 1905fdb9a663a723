"""Exports in the shapes TRL trains on, and full episodes: a registry of formats.

Each format is a name, a function that yields its records, and a line of documentation
(:func:`register_export`; an installed package can add one through the ``agent_studio.exports``
entry point group). The CLI's ``--format``, the Overview's downloads and the README table read
the registry. The built-in formats (one JSON object per line):

- ``dpo``: preference, explicit prompt, conversational. ``prompt`` is the chat up to the
  judged step (the prompt the model saw, when a model took the step); ``chosen`` and
  ``rejected`` are the assistant turns (for trajectory pairs, the rest of each trajectory
  as alternating assistant and observation turns).
- ``reward``: preference, implicit prompt: ``chosen`` and ``rejected`` are whole conversations.
- ``kto``: unpaired preference: ``prompt``, ``completion``, ``label`` (bool). From judged
  pairs (chosen side True, other side False; both-bad gives two False rows) and from step
  labels (good/correct True; bad/redundant/erroneous False; neutral left out).
- ``prm``: stepwise supervision (TRL's standard format): ``prompt`` (task and first
  observation), ``completions`` (each step: the observation it saw, then its output) and
  ``labels`` (bool per step, the annotators' majority; neutral counts as not an error),
  for the labelled steps from the start of each episode up to the first unlabelled one.
- ``episodes``: every stored episode in the core's trace format.

Rows also say where they came from (``pair_id``; ``source`` for kto; ``episode_id`` for
prm) and, for dpo and reward, what the annotators wrote (``rationales``, verbatim): TRL
ignores columns it does not use.

Pairs are judged by the majority of their annotators; ties, both-bad judgements and pairs
without a majority are left out of ``dpo`` and ``reward`` and counted in the summary.
Where the judged observation has a frame, rows get an ``images`` column: PNG files next to
the output (``<name>_images/``), referenced by relative path (as TRL's vision trainers expect
one image per row: the observation's frame).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, select, type_coerce

from studio.evaluation.stats import is_person
from storage.orm import AnnotationRow, AnnotatorRow, CandidateRow, EpisodeRow, PairRow, StepLabelRow, StepRow
from storage.records import STEP_LABELS
from storage.store import Store
from storage.vocab import majority
from studio.agents.react import EXAMPLE_TITLES, expert_thought
from studio.errors import StudioError
from studio.plugins import first_doc_line, load_entry_points

EPISODE_CHUNK = 200
Message = dict[str, Any]


class AnnotatorSelection:
    """Whose judgements and step labels count in an export's majorities (``--annotators``):

    - ``default``: people's, for every pair (or step) any person judged; machines' (``judge:…``,
      ``mc:…``) only where no person did — a 135M judge must not outvote the people who decided a pair;
    - ``humans``, ``machines``, ``all``: those only (all: everyone, one vote each);
    - ``NAME,NAME``: these annotators only.
    """

    MODES = ("default", "humans", "machines", "all")

    def __init__(self, text: str = "default") -> None:
        text = str(text or "default").strip()
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise StudioError("Give --annotators as default, humans, machines, all, or names separated by commas.")
        if len(names) == 1 and names[0] in self.MODES:
            self.mode, self.names = names[0], frozenset()
        elif any(name in self.MODES for name in names):
            raise StudioError(f"--annotators takes one of {', '.join(self.MODES)}, or annotator names, not both.")
        else:
            self.mode, self.names = "names", frozenset(names)

    def counted(self, votes: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The (annotator, vote) pairs of one item that count."""
        people = [vote for vote in votes if is_person(vote[0])]
        machines = [vote for vote in votes if not is_person(vote[0])]
        if self.mode == "default":
            return people or machines
        if self.mode == "humans":
            return people
        if self.mode == "machines":
            return machines
        if self.mode == "all":
            return list(votes)
        return [vote for vote in votes if vote[0] in self.names]

    def describe(self) -> str:
        """The choice in words, for the export's summary."""
        return {
            "default": "people where any person judged, machines elsewhere",
            "humans": "people only",
            "machines": "machines only (judge:*, mc:*)",
            "all": "everyone, people and machines alike",
        }.get(self.mode, "only " + ", ".join(sorted(self.names)))


@dataclass
class ExportSummary:
    """What an export wrote and what it left out (printed by the CLI)."""

    format: str
    out: str
    records: int = 0
    images: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    hf_dataset: str | None = None
    annotators: str = ""
    """Whose judgements counted (:meth:`AnnotatorSelection.describe`)."""
    selection: AnnotatorSelection = field(default_factory=AnnotatorSelection, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "selection"}


# -- the conversation around a step ---------------------------------------------------------------
@dataclass
class StepView:
    """What an export needs of one stored step."""

    index: int
    observation: str
    raw: str
    action: str | None
    thought: str | None
    next_observation: str
    prompt_json: bytes | None
    """The stored prompt's JSON (UTF-8): exports splice it into lines without decoding it."""
    frame: bytes | None

    @cached_property
    def prompt(self) -> list[Message] | None:
        return None if self.prompt_json is None else json.loads(self.prompt_json)


def output_text(raw: str, action: str | None) -> str:
    """An output as an assistant turn: the model's own text, or the action someone else took (an
    expert, a random policy, a person) in the policy's format, with the thought an expert step has
    in the policy's few-shot examples, so both sides of a pair teach the same format."""
    if raw and raw.strip() != (action or "").strip():
        return raw
    return f"Thought: {expert_thought(action)}\nAction: {action}" if action else raw


def compact_messages(messages: list[Message]) -> list[Message]:
    """The messages without the few-shot example in the system message: a prompting device, not
    the task, and most of a prompt's length (an export in ``compact`` mode trains at short max_length)."""
    out = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str):
            cuts = [content.find(f"\n\n{title}") for title in EXAMPLE_TITLES if f"\n\n{title}" in content]
            if cuts:
                message = {**message, "content": content[: min(cuts)]}
        out.append(message)
    return out


def fallback_prompt(instruction: str, steps: list[StepView], upto: int) -> list[Message]:
    """The chat up to step ``upto`` for steps no model took (expert, random, human)."""
    messages: list[Message] = [
        {"role": "system", "content": f"You are an agent solving a task step by step.\nTask: {instruction}"}
    ]
    for step in steps[:upto]:
        messages.append({"role": "user", "content": f"Observation: {step.observation}"})
        messages.append({"role": "assistant", "content": output_text(step.raw, step.action)})
    messages.append({"role": "user", "content": f"Observation: {steps[upto].observation}"})
    return messages


def prompt_at(instruction: str, steps: list[StepView], index: int) -> list[Message]:
    step = steps[index]
    return step.prompt if step.prompt else fallback_prompt(instruction, steps, index)


def continuation(steps: list[StepView]) -> list[Message]:
    """A trajectory after its first prompt: assistant turns with the observations between them."""
    messages: list[Message] = []
    for position, step in enumerate(steps):
        if position:
            messages.append({"role": "user", "content": f"Observation: {step.observation}"})
        messages.append({"role": "assistant", "content": output_text(step.raw, step.action)})
    return messages


class EpisodeCache:
    """Steps of the episodes an export touches, loaded a chunk of episodes at a time."""

    def __init__(self, session) -> None:  # noqa: ANN001 - a sqlalchemy Connection
        self.session = session
        self.steps: dict[str, list[StepView]] = {}
        self.instructions: dict[str, str] = {}
        self._encoded: dict[int, tuple[Any, bytes]] = {}
        #: (episode, candidate, step) -> JSON of that output's assistant turns.
        self.sides: dict[tuple[str, str | None, int | None], bytes] = {}

    def encode(self, value: Any) -> bytes:
        """JSON of a value shared by many records (a step's prompt), encoded once per chunk."""
        found = self._encoded.get(id(value))
        if found is None or found[0] is not value:
            found = (value, dumps(value).encode("utf-8"))  # the value is kept alive with its id: no id reuse
            self._encoded[id(value)] = found
        return found[1]

    def load(self, episode_ids: set[str]) -> None:
        missing = sorted(episode_ids - self.steps.keys())
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            for episode_id, instruction in self.session.execute(
                select(EpisodeRow.id, EpisodeRow.instruction).where(EpisodeRow.id.in_(chunk))
            ):
                self.instructions[episode_id] = instruction
                self.steps[episode_id] = []
            compressed_prompt = type_coerce(StepRow.prompt, LargeBinary)  # the bytes as stored, not decoded
            query = select(
                StepRow.episode_id,
                StepRow.index,
                StepRow.observation,
                StepRow.raw,
                StepRow.action,
                StepRow.thought,
                StepRow.next_observation,
                compressed_prompt,
                StepRow.frame,
            ).where(StepRow.episode_id.in_(chunk))
            for row in self.session.execute(query.order_by(StepRow.episode_id, StepRow.index)).all():
                prompt_json = None if row[7] is None else zlib.decompress(row[7])
                self.steps[row.episode_id].append(StepView(*row[1:7], prompt_json, row[8]))

    def chunked(self, episode_ids: list[str]) -> Iterator[str]:
        """``episode_ids`` in order, their steps loaded a chunk at a time (the earlier chunk dropped)."""
        for start in range(0, len(episode_ids), EPISODE_CHUNK):
            chunk = episode_ids[start : start + EPISODE_CHUNK]
            self.clear()
            self.load(set(chunk))
            yield from chunk

    def clear(self) -> None:
        self.steps.clear()
        self.instructions.clear()
        self._encoded.clear()
        self.sides.clear()


#: What exports do with observation frames: leave them out (text models), or PNG files by absolute path.
IMAGE_MODES = ("none", "paths")
#: Prompts as the model saw them (``full``), or without the few-shot example (``compact``).
PROMPT_MODES = ("compact", "full")


class ImageWriter:
    """What an export writes besides its lines: frames as PNG files next to the JSONL (deduplicated by
    content, referenced by absolute path) when ``images`` is ``paths``; and how prompts are written
    (``prompt``: ``compact`` drops the few-shot example, ``full`` keeps them as the model saw them)."""

    def __init__(self, out: Path, images: str = "none", prompt: str = "compact") -> None:
        if images not in IMAGE_MODES:
            raise StudioError(f"--images must be one of {', '.join(IMAGE_MODES)}, got {str(images)[:40]!r}.")
        if prompt not in PROMPT_MODES:
            raise StudioError(f"--prompt must be one of {', '.join(PROMPT_MODES)}, got {str(prompt)[:40]!r}.")
        self.folder = out.with_name(out.stem + "_images").absolute()
        self.written: set[str] = set()
        self.mode, self.compact = images, prompt == "compact"

    def messages(self, messages: list[Message]) -> list[Message]:
        """A prompt as this export writes it."""
        return compact_messages(messages) if self.compact else messages

    def __call__(self, png: bytes | None) -> list[str] | None:
        if png is None or self.mode == "none":
            return None
        name = hashlib.sha1(png).hexdigest()[:20] + ".png"
        if name not in self.written:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_bytes(png)
            self.written.add(name)
        return [str(self.folder / name)]  # absolute: the file is found wherever the trainer runs from


# -- pairs ---------------------------------------------------------------------------------------------
#: The pair columns an export reads (plain rows, not ORM objects: 100k of those are slow to build).
PAIR_COLUMNS = (
    PairRow.id,
    PairRow.kind,
    PairRow.step_index,
    PairRow.left_episode_id,
    PairRow.left_candidate_id,
    PairRow.right_episode_id,
    PairRow.right_candidate_id,
)


def judged_pairs(
    store: Store, summary: ExportSummary
) -> Iterator[tuple[Any, str, EpisodeCache, dict[str, Any], list[str]]]:
    """Pairs with a majority judgement (and the annotators' rationales), with their episodes
    loaded; counts what is left out."""
    cast: dict[str, list[tuple[str, tuple[str, str]]]] = defaultdict(list)
    with store.db.reading() as orm_session:
        session = orm_session.connection()  # Core rows: building ORM rows for 100k pairs is slow
        query = (
            select(AnnotationRow.pair_id, AnnotatorRow.name, AnnotationRow.choice, AnnotationRow.rationale)
            .join(AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id)
            .order_by(AnnotationRow.id)
        )
        for pair_id, name, choice, rationale in session.execute(query).all():
            cast[pair_id].append((name, (choice, rationale)))
        votes: dict[str, list[str]] = {}
        rationales: dict[str, list[str]] = {}
        for pair_id, ballots in cast.items():  # only the annotators the export counts (--annotators)
            counted = summary.selection.counted(ballots)
            votes[pair_id] = [choice for _name, (choice, _rationale) in counted]
            rationales[pair_id] = [rationale for _name, (_choice, rationale) in counted if rationale]
        rows = session.execute(
            select(*PAIR_COLUMNS).order_by(PairRow.left_episode_id, PairRow.step_index, PairRow.id)
        ).all()
        left_out = Counter()
        decided: list[tuple[Any, str]] = []
        for row in rows:
            choice = majority(votes.get(row.id, []))
            if not cast.get(row.id):
                left_out["unjudged"] += 1
            elif not votes.get(row.id):
                left_out["judged_by_others"] += 1  # only by annotators this export does not count
            elif choice is None:
                left_out["no_majority"] += 1
            else:
                decided.append((row, choice))
        summary.left_out.update(left_out)
        cache = EpisodeCache(session)
        for start in range(0, len(decided), EPISODE_CHUNK * 5):
            chunk = decided[start : start + EPISODE_CHUNK * 5]
            cache.clear()
            cache.load({r.left_episode_id for r, _ in chunk} | {r.right_episode_id for r, _ in chunk})
            candidate_ids = [c for r, _ in chunk for c in (r.left_candidate_id, r.right_candidate_id) if c]
            candidates: dict[str, Any] = {}
            for offset in range(0, len(candidate_ids), 500):
                query = select(CandidateRow.id, CandidateRow.raw, CandidateRow.action).where(
                    CandidateRow.id.in_(candidate_ids[offset : offset + 500])
                )
                for candidate in session.execute(query).all():
                    candidates[candidate.id] = candidate
            for row, choice in chunk:
                yield row, choice, cache, candidates, rationales.get(row.id, [])


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
    return [{"role": "assistant", "content": output_text(step.raw, step.action)}]


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


#: ``"key":`` as JSON bytes, by field name: a format has a handful of names, encoded once per process.
_FIELD_NAMES: dict[str, bytes] = {}


def _field_name(key: str) -> bytes:
    found = _FIELD_NAMES.get(key)
    if found is None:
        found = _FIELD_NAMES[key] = dumps(key).encode("utf-8") + b":"
    return found


class ExportRow:
    """One exported record as named fields, each a value or its JSON already encoded.

    The JSON line and the record (a dict, for ``--hf-dataset`` and tests) come from the same
    fields, so they cannot disagree; pairwise rows splice stored prompt JSON into fields
    without decoding it (most of an export's work otherwise). A row made from a plain dict
    (:meth:`of`) keeps it: its line is one ``dumps`` of it.
    """

    __slots__ = ("fields", "plain")

    def __init__(self) -> None:
        self.fields: list[tuple[str, Any, bytes | None]] = []
        self.plain: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: dict[str, Any]) -> ExportRow:
        """A row of plain values (what most formats and plugins yield)."""
        row = cls()
        row.plain = record
        return row

    def add(self, key: str, value: Any = None, *, encoded: bytes | None = None) -> ExportRow:
        """A field: ``value``, or its compact JSON ``encoded`` already (as :func:`dumps` writes it)."""
        if self.plain is not None:  # from now on, fields
            self.fields, self.plain = [(k, v, None) for k, v in self.plain.items()], None
        self.fields.append((key, value, encoded))
        return self

    def line(self) -> bytes:
        """The record as one compact JSON line (without the newline)."""
        if self.plain is not None:
            return dumps(self.plain).encode("utf-8")
        names = _FIELD_NAMES
        parts = [
            (names.get(key) or _field_name(key)) + (encoded if encoded is not None else dumps(value).encode("utf-8"))
            for key, value, encoded in self.fields
        ]
        return b"{" + b",".join(parts) + b"}"

    def record(self) -> dict[str, Any]:
        """The record as a dict: the same fields, encoded ones decoded."""
        if self.plain is not None:
            return dict(self.plain)
        return {key: json.loads(encoded) if encoded is not None else value for key, value, encoded in self.fields}


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
    for episode_id, steps, labels, cache in labelled_episodes(store, summary.selection):
        for step in steps:
            value = labels.get(step.index)
            if value is None or value == "neutral":
                continue
            record = {
                "prompt": images.messages(prompt_at(cache.instructions[episode_id], steps, step.index)),
                "completion": [{"role": "assistant", "content": output_text(step.raw, step.action)}],
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
            completions.append(seen + output_text(step.raw, step.action))
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
                "messages": [*prompt, {"role": "assistant", "content": output_text(last.raw, last.action)}],
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


# -- writing -------------------------------------------------------------------------------------------
def dumps(value: Any) -> str:
    """Compact JSON, as the store keeps prompts (so stored prompts splice in unchanged)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- the format registry -----------------------------------------------------------------------------
RowSource = Callable[[Store, ExportSummary, ImageWriter], Iterable[ExportRow | dict[str, Any]]]


@dataclass(frozen=True)
class ExportFormat:
    """A registered export format: its name, what builds its rows, and what it is for."""

    name: str
    rows: RowSource
    """``rows(store, summary, images)``: the records (dicts or :class:`ExportRow`); counts what it
    leaves out in ``summary.left_out`` and writes frames with ``images(png)``."""
    summary: str
    """One line: the record shape and what trains on it (CLI help, the Overview, the README)."""


#: Formats by name, in the order they are offered; filled at import and by :func:`register_export`.
EXPORT_FORMATS: dict[str, ExportFormat] = {}
#: Entry point group other packages register formats under (``name = "pkg.module:rows"``).
ENTRY_POINT_GROUP = "agent_studio.exports"
_plugins_loaded: list[bool] = []


def register_export(name: str, rows: RowSource, summary: str, replace: bool = False) -> ExportFormat:
    """Offer ``name`` in ``agent-studio export --format``, the Overview's downloads and the API."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"Not a usable format name: {name!r} (letters, digits, - and _).")
    if name in EXPORT_FORMATS and not replace and EXPORT_FORMATS[name].rows is not rows:
        raise ValueError(f"An export format {name!r} is already registered (pass replace=True to replace it).")
    EXPORT_FORMATS[name] = ExportFormat(name, rows, summary)
    return EXPORT_FORMATS[name]


def export_formats() -> list[ExportFormat]:
    """Every registered format (built-ins first, then installed packages' entry points)."""
    if not _plugins_loaded:
        _plugins_loaded.append(True)
        load_entry_points(ENTRY_POINT_GROUP, _register_plugin)
    return list(EXPORT_FORMATS.values())


def _register_plugin(point: Any, target: Any) -> None:
    """An entry point names a row function (``name = "pkg.module:rows"``) or a whole :class:`ExportFormat`."""
    if isinstance(target, ExportFormat):
        EXPORT_FORMATS.setdefault(target.name, target)
    elif point.name not in EXPORT_FORMATS:
        register_export(point.name, target, first_doc_line(target, point.name))


def format_names() -> list[str]:
    return [fmt.name for fmt in export_formats()]


def export_rows(store: Store, format: str, summary: ExportSummary, images: ImageWriter) -> Iterator[ExportRow]:
    """The rows of ``format``, each as an :class:`ExportRow` (its line and its record agree)."""
    registered = {fmt.name: fmt for fmt in export_formats()}.get(format)
    if registered is None:
        raise StudioError(f"Unknown export format {str(format)[:40]!r}: use one of {', '.join(format_names())}.")
    for row in registered.rows(store, summary, images):
        yield row if isinstance(row, ExportRow) else ExportRow.of(row)


register_export(
    "dpo",
    lambda store, summary, images: pairwise_rows(store, summary, images, implicit_prompt=False),
    "preference, explicit prompt (prompt, chosen, rejected), conversational: TRL's DPOTrainer",
)
register_export(
    "reward",
    lambda store, summary, images: pairwise_rows(store, summary, images, implicit_prompt=True),
    "preference, implicit prompt (chosen, rejected whole conversations): TRL's RewardTrainer",
)
register_export(
    "prm",
    lambda store, summary, images: prm_records(store, summary, images),
    "stepwise supervision (prompt, completions, labels per step): TRL's PRMTrainer (TRL 1.9)",
)
register_export(
    "kto",
    lambda store, summary, images: kto_records(store, summary, images),
    "unpaired preference (prompt, completion, label) from judged pairs and step labels: TRL's KTOTrainer",
)
register_export(
    "sft",
    lambda store, summary, images: sft_records(store, summary, images),
    "conversations (messages) of the successful episodes: TRL's SFTTrainer",
)
register_export(
    "episodes",
    lambda store, summary, images: episode_records(store, summary),
    "every stored episode in the trace format (agent-studio import reads it back)",
)


def export(
    store: Store,
    format: str,
    out: str | Path,
    hf_dataset: str | Path | None = None,
    images: str = "none",
    prompt: str = "compact",
    annotators: str = "default",
) -> ExportSummary:
    """Write ``format`` records to the JSONL file ``out`` (and a ``datasets`` folder when asked).

    ``images``: ``none`` (text models: no ``images`` column, which TRL's trainers would take for a
    vision dataset) or ``paths`` (PNG files, absolute paths). ``prompt``: ``compact`` (no few-shot
    example: rows fit TRL's default lengths) or ``full`` (as the model saw them). ``annotators``:
    whose judgements and labels count (:class:`AnnotatorSelection`; written in the summary)."""
    if format not in format_names():
        raise StudioError(f"Unknown export format {str(format)[:40]!r}: use one of {', '.join(format_names())}.")
    path = Path(out).expanduser()
    if path.is_dir():
        raise StudioError(
            f"The export target {path} is a folder; give a file name such as {path / (format + '.jsonl')}."
        )
    datasets = _datasets_module() if hf_dataset else None
    selection = AnnotatorSelection(annotators)
    summary = ExportSummary(format=format, out=str(path), annotators=selection.describe(), selection=selection)
    writer = ImageWriter(path, images=images, prompt=prompt)
    rows: list[dict[str, Any]] | None = [] if datasets else None
    temporary = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb", buffering=1 << 20) as handle:
            for row in export_rows(store, format, summary, writer):
                handle.write(row.line() + b"\n")
                summary.records += 1
                if rows is not None:
                    rows.append(row.record())
        temporary.replace(path)  # a failed export never leaves a half-written file under the real name
    except OSError as exc:
        _remove_quietly(temporary)
        raise StudioError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    except BaseException:
        _remove_quietly(temporary)
        raise
    if datasets is not None and rows is not None:
        summary.hf_dataset = str(_save_hf_dataset(datasets, rows, Path(hf_dataset).expanduser(), writer.folder))
    return summary


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _datasets_module() -> Any:
    try:
        import datasets
    except ImportError:
        raise StudioError("--hf-dataset needs the `datasets` library: pip install datasets") from None
    return datasets


def _save_hf_dataset(datasets: Any, rows: list[dict[str, Any]], folder: Path, image_folder: Path) -> Path:
    """The same records as a Hugging Face ``datasets`` folder (``save_to_disk``), images embedded."""
    if any("images" in r for r in rows):
        for row in rows:
            row["images"] = [
                {"bytes": (image_folder / Path(p).name).read_bytes(), "path": None} for p in row.get("images", [])
            ]
    datasets.disable_progress_bars()
    try:
        dataset = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({})
        if "images" in dataset.column_names:
            dataset = dataset.cast_column("images", datasets.List(datasets.Image()))
        dataset.save_to_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - pyarrow and datasets raise many kinds; the JSONL is written
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudioError(f"Wrote the JSONL, but could not build the datasets folder {folder}: {first}") from None
    return folder
