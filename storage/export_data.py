"""What the exports read from the store: whose judgements count, the summary, the steps of the
episodes an export touches (a chunk at a time), the judged pairs, observation frames written as
PNG files, and :class:`ExportRow` (a record and its JSON line built from the same fields)."""

from __future__ import annotations

import hashlib
import json
import zlib
from fnmatch import fnmatchcase
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from sqlalchemy import LargeBinary, select, type_coerce

from agent_studio.storage.orm import (
    AdjudicationRow,
    AnnotationRow,
    AnnotatorRow,
    CandidateRow,
    EpisodeRow,
    PairRow,
    StepRow,
)
from agent_studio.storage.store import Store
from agent_studio.storage.vocab import majority
from studio.agents.conversation import compact_messages
from studio.errors import StudioError
from studio.evaluation.stats import is_person
from studio.importers.transcript import rebuilt_prompts

EPISODE_CHUNK = 200


Message = dict[str, Any]


class AnnotatorSelection:
    """Whose judgements and step labels count in an export's majorities (``--annotators``):

    - ``default``: people's, for every pair (or step) any person judged; machines' (``judge:…``,
      ``mc:…``) only where no person did — a 135M judge must not outvote the people who decided a pair;
    - ``humans``, ``machines``, ``all``: those only (all: everyone, one vote each);
    - ``NAME,NAME``: these annotators only; a name with ``*`` matches many (``mc:*``, ``judge:*``), and
      ``humans`` may join them (``humans,mc:*``: what ``train --sources human,mc`` reads).
    """

    MODES = ("default", "humans", "machines", "all")

    def __init__(self, text: str = "default") -> None:
        text = str(text or "default").strip()
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise StudioError("Give --annotators as default, humans, machines, all, or names separated by commas.")
        self.people = False
        if len(names) == 1 and names[0] in self.MODES:
            self.mode, self.names = names[0], frozenset()
        elif any(name in self.MODES and name != "humans" for name in names):
            raise StudioError(
                f"--annotators takes one of {', '.join(self.MODES)}, or annotator names (with humans), not both."
            )
        else:
            self.people = "humans" in names
            self.mode, self.names = "names", frozenset(name for name in names if name != "humans")

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
        return [vote for vote in votes if self.people and is_person(vote[0]) or self._named(vote[0])]

    def _named(self, annotator: str) -> bool:
        """``annotator`` is one of the names, or matches one with ``*`` (``mc:*``: every Monte Carlo labeller)."""
        return annotator in self.names or any("*" in name and fnmatchcase(annotator, name) for name in self.names)

    def describe(self) -> str:
        """The choice in words, for the export's summary."""
        return {
            "default": "people where any person judged, machines elsewhere",
            "humans": "people only",
            "machines": "machines only (judge:*, mc:*)",
            "all": "everyone, people and machines alike",
        }.get(self.mode, "only " + ", ".join((["people"] if self.people else []) + sorted(self.names)))


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
    adjudicated: int = 0
    """Pairs whose row follows an adjudicator's decision rather than the annotators' majority."""
    campaign: str | None = None
    """Only this campaign's pairs (``export --campaign``)."""
    selection: AnnotatorSelection = field(default_factory=AnnotatorSelection, repr=False)
    pairs: frozenset[str] | None = field(default=None, repr=False)
    """The pairs a campaign export is limited to."""

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("selection", "pairs")}


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
    actor: str = ""

    @cached_property
    def prompt(self) -> list[Message] | None:
        return None if self.prompt_json is None else json.loads(self.prompt_json)


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
            systems: dict[str, list[str]] = {}
            for episode_id, instruction, source in self.session.execute(
                select(EpisodeRow.id, EpisodeRow.instruction, EpisodeRow.source).where(EpisodeRow.id.in_(chunk))
            ):
                self.instructions[episode_id] = instruction
                self.steps[episode_id] = []
                systems[episode_id] = (source or {}).get("system", []) if source else []
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
                StepRow.extra,
                StepRow.actor,
            ).where(StepRow.episode_id.in_(chunk))
            transcripts: dict[str, list[Any]] = {}
            for row in self.session.execute(query.order_by(StepRow.episode_id, StepRow.index)).all():
                prompt_json = None if row[7] is None else zlib.decompress(row[7])
                self.steps[row.episode_id].append(StepView(*row[1:7], prompt_json, row[8], row.actor))
                transcripts.setdefault(row.episode_id, []).append((row.extra or {}).get("transcript"))
            self._rebuild_prompts(systems, transcripts)

    def _rebuild_prompts(self, systems: dict[str, list[str]], transcripts: dict[str, list[Any]]) -> None:
        """An imported conversation's steps get the prompt their model saw, rebuilt from the transcript
        each step keeps (:func:`studio.importers.transcript.rebuilt_prompts`): exports write it."""
        for episode_id, kept in transcripts.items():
            if not any(isinstance(t, dict) for t in kept):
                continue
            prompts = rebuilt_prompts(systems.get(episode_id, []), kept)
            for view, prompt in zip(self.steps[episode_id], prompts):
                if view.prompt_json is None and prompt is not None:
                    view.prompt_json = dumps(prompt).encode("utf-8")

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
    """Pairs with a decision (an adjudicator's where one exists, else the counted annotators' majority)
    and the annotators' rationales, with their episodes loaded; counts what is left out."""
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
        # An adjudicator's decision settles a pair the annotators disagreed on (their judgements stay stored).
        decisions = dict(session.execute(select(AdjudicationRow.pair_id, AdjudicationRow.choice)).all())
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
            if summary.pairs is not None and row.id not in summary.pairs:
                continue
            choice = majority(votes.get(row.id, []))
            if row.id in decisions:
                summary.adjudicated += 1
                decided.append((row, decisions[row.id]))
            elif not cast.get(row.id):
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


def dumps(value: Any) -> str:
    """Compact JSON, as the store keeps prompts (so stored prompts splice in unchanged)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
