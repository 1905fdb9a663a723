"""Annotation campaigns: a named set of pairs, judged by a team with an overlap target, under versioned
guidelines, with gold items, and adjudication where the judgements disagree.

- **Items** are chosen once, when the campaign is made, by filters (pair kind, source, environment,
  sweep, model), in the queue's stable random order; gold items (pairs with a known answer) join them.
- **Assignments**: ``round-robin`` deals each item to ``overlap`` of the named annotators when the
  campaign is made; ``explicit`` items are handed to people by name (:meth:`CampaignStore.assign`);
  ``open`` items are claimed as annotators ask for work. Every assignment raises the item's ``claims``
  with one conditional UPDATE (``claims < overlap``), so that two processes never both take an item's
  last place, and a unique (campaign, pair, annotator) row means nobody holds an item twice. Gold
  items go to everyone and have no limit.
- **Judging** goes through :class:`~storage.judging.Judging` (the same judgement record, undo and
  all), checked against the assignment, and notes the guidelines version the annotator worked under.
- **Adjudication** is a record of its own (:class:`~storage.orm.AdjudicationRow`); the judgements it
  settles stay as they were. Exports follow it where it exists.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from agent_studio.storage.campaign_results import CampaignResults, CampaignRecord
from agent_studio.storage.db import Database
from agent_studio.storage.judging import _PageLoader, judgement_fields
from agent_studio.storage.orm import (
    AnnotationRow,
    AssignmentRow,
    CampaignItemRow,
    CampaignRow,
    EpisodeRow,
    GuidelinesRow,
    ModelRow,
    PairRow,
    SweepRow,
)
from agent_studio.storage.records import PAIR_KINDS, PAIR_SOURCES, AnnotationRecord, QueueItem
from agent_studio.storage.vocab import check_filter, normalize_annotator, normalize_choice, precise_now
from studio.errors import StudioError
from studio.evaluation.campaign import round_robin
from studio.trace import new_id

ASSIGNMENTS = ("round-robin", "explicit", "open")
#: A campaign's name: a word people can type (it appears in URLs of exports and in commands).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_GUIDELINES = 100_000
MAX_ITEMS = 100_000
FILTERS = ("kind", "source", "env", "sweep", "model")


def check_name(name: Any) -> str:
    text = str(name or "").strip()
    if not NAME.match(text):
        raise StudioError(f"A campaign name is 1 to 100 letters, digits, '.', '_' or '-' (got {text[:40]!r}).")
    return text


class CampaignStore(CampaignResults):
    """Campaigns, their items, assignments, judgements through them, adjudications and quality."""

    def __init__(self, database: Database, preferences: Any) -> None:
        self.db = database
        self.preferences = preferences  # a PreferenceStore: judgements go through it

    # -- making one ----------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        overlap: int = 1,
        assignment: str = "round-robin",
        annotators: Sequence[str] = (),
        filters: Mapping[str, str | None] | None = None,
        limit: int | None = None,
        guidelines: str = "",
        taxonomy: Sequence[str] = (),
        gold: Mapping[str, str] | None = None,
        show_consequences: bool = True,
        author: str = "studio",
    ) -> CampaignRecord:
        """Make a campaign over the pairs ``filters`` choose (at most ``limit``), plus the ``gold`` items
        (pair id -> its known choice, of the stored pair). Everything checked first; nothing stored on error."""
        name = check_name(name)
        if assignment not in ASSIGNMENTS:
            raise StudioError(f"Unknown assignment {str(assignment)[:40]!r}: use one of {', '.join(ASSIGNMENTS)}.")
        if not isinstance(overlap, int) or not 1 <= overlap <= 100:
            raise StudioError("The overlap (annotators per item) is a whole number from 1 to 100.")
        people = list(dict.fromkeys(normalize_annotator(a) for a in annotators))
        if assignment == "round-robin":
            round_robin([], people, overlap)  # checks there are enough people
        chosen = {k: (str(v).strip() or None) if v is not None else None for k, v in (filters or {}).items()}
        unknown = sorted(set(chosen) - set(FILTERS))
        if unknown:
            raise StudioError(f"Unknown campaign filter {unknown[0]!r}: use {', '.join(FILTERS)}.")
        check_filter(chosen.get("kind"), PAIR_KINDS, "pair kind")
        check_filter(chosen.get("source"), PAIR_SOURCES, "pair source")
        gold = {str(p): normalize_choice(c) for p, c in (gold or {}).items()}
        if limit is not None and not 1 <= int(limit) <= MAX_ITEMS:
            raise StudioError(f"The item limit is from 1 to {MAX_ITEMS:,}.")
        labels = [t.strip() for t in taxonomy if str(t).strip()]
        text = _guidelines_text(guidelines)

        def work(session: Session) -> CampaignRecord:
            if session.scalar(select(CampaignRow.id).where(CampaignRow.name == name)):
                raise StudioError(f"A campaign named {name!r} exists; pick another name.")
            pair_ids = self._matching(session, chosen, limit or MAX_ITEMS)
            missing = [p for p in gold if session.get(PairRow, p) is None]
            if missing:
                raise StudioError(f"No pair with id {missing[0][:64]!r} (a gold item must be a stored pair).")
            pair_ids = [p for p in pair_ids if p not in gold]
            if not pair_ids and not gold:
                raise StudioError("No pairs match the campaign's filters; make pairs first (`agent-studio pairs`).")
            # Gold items sit among the others at random places, so that nobody can tell them by position.
            order = pair_ids + list(gold)
            random.Random(name).shuffle(order)
            row = CampaignRow(
                id=new_id(), name=name, filters={k: v for k, v in chosen.items() if v}, overlap=overlap,
                assignment=assignment, annotators=people, taxonomy=labels, show_consequences=bool(show_consequences),
                status="open", created_at=precise_now(), closed_at=None,
            )  # fmt: skip
            session.add(row)
            session.flush()
            session.add_all(
                CampaignItemRow(campaign_id=row.id, pair_id=p, position=i, gold=gold.get(p), claims=0)
                for i, p in enumerate(order)
            )
            session.add(
                GuidelinesRow(campaign_id=row.id, version=1, text=text, author=author, created_at=precise_now())
            )
            session.flush()
            if assignment == "round-robin":
                plan = round_robin([p for p in order if p not in gold], people, overlap)
                for pair_id in order:
                    for person in people if pair_id in gold else plan[pair_id]:
                        self._claim(session, row, pair_id, person)
            return self._record(session, row)

        return self.db.write(work, attempts=1)

    def _matching(self, session: Session, filters: Mapping[str, str | None], limit: int) -> list[str]:
        query = select(PairRow.id)
        if filters.get("kind"):
            query = query.where(PairRow.kind == filters["kind"])
        if filters.get("source"):
            query = query.where(PairRow.source == filters["source"])
        if filters.get("env"):
            query = query.where(PairRow.env == filters["env"])
        if filters.get("sweep") or filters.get("model"):
            episode = aliased(EpisodeRow)
            query = query.join(episode, episode.id == PairRow.left_episode_id)
            if filters.get("sweep"):
                sweep_id = session.scalar(select(SweepRow.id).where(SweepRow.name == filters["sweep"]))
                if sweep_id is None:
                    raise StudioError(f"No sweep named {str(filters['sweep'])[:64]!r}.")
                query = query.where(episode.sweep_id == sweep_id)
            if filters.get("model"):
                query = query.join(ModelRow, ModelRow.id == episode.model_id).where(ModelRow.name == filters["model"])
        return list(session.scalars(query.order_by(PairRow.shuffle, PairRow.id).limit(limit)))

    # -- reading -------------------------------------------------------------------------------
    def _row(self, session: Session, name: str) -> CampaignRow:
        row = session.scalars(select(CampaignRow).where(CampaignRow.name == str(name or "").strip())).first()
        if row is None:
            raise StudioError(f"No campaign named {str(name or '')[:64]!r}.")
        return row

    def _record(self, session: Session, row: CampaignRow) -> CampaignRecord:
        latest = session.scalars(
            select(GuidelinesRow).where(GuidelinesRow.campaign_id == row.id).order_by(GuidelinesRow.version.desc())
        ).first()
        counts = session.execute(
            select(func.count(), func.count(CampaignItemRow.gold)).where(CampaignItemRow.campaign_id == row.id)
        ).one()
        return CampaignRecord(
            id=row.id, name=row.name, filters=dict(row.filters), overlap=row.overlap, assignment=row.assignment,
            annotators=list(row.annotators), taxonomy=list(row.taxonomy), show_consequences=row.show_consequences,
            status=row.status, created_at=row.created_at, closed_at=row.closed_at,
            guidelines=latest.text if latest else "", guidelines_version=latest.version if latest else 0,
            items=counts[0], gold_items=counts[1],
        )  # fmt: skip

    def get(self, name: str) -> CampaignRecord:
        with self.db.reading() as session:
            return self._record(session, self._row(session, name))

    def list(self) -> list[CampaignRecord]:
        with self.db.reading() as session:
            rows = session.scalars(select(CampaignRow).order_by(CampaignRow.created_at)).all()
            return [self._record(session, row) for row in rows]

    def guidelines_history(self, name: str) -> list[tuple[int, str, str, str]]:
        """Every version of the guidelines: (version, text, author, when)."""
        with self.db.reading() as session:
            row = self._row(session, name)
            query = select(GuidelinesRow).where(GuidelinesRow.campaign_id == row.id).order_by(GuidelinesRow.version)
            return [(g.version, g.text, g.author, g.created_at) for g in session.scalars(query)]

    def pair_ids(self, name: str, gold: bool | None = None) -> list[str]:
        """The campaign's pairs in its order (``gold``: only gold items, or only the others)."""
        with self.db.reading() as session:
            row = self._row(session, name)
            query = select(CampaignItemRow.pair_id).where(CampaignItemRow.campaign_id == row.id)
            if gold is not None:
                query = query.where(CampaignItemRow.gold.is_not(None) if gold else CampaignItemRow.gold.is_(None))
            return list(session.scalars(query.order_by(CampaignItemRow.position)))

    # -- changing one --------------------------------------------------------------------------
    def set_guidelines(self, name: str, text: str, author: str = "studio") -> int:
        """A new version of the guidelines (the old ones stay); returns its number."""
        text = _guidelines_text(text)

        def work(session: Session) -> int:
            row = self._row(session, name)
            version = (
                session.scalar(select(func.max(GuidelinesRow.version)).where(GuidelinesRow.campaign_id == row.id)) or 0
            ) + 1
            session.add(
                GuidelinesRow(campaign_id=row.id, version=version, text=text, author=author, created_at=precise_now())
            )
            return version

        return self.db.write(work)

    def close(self, name: str) -> CampaignRecord:
        """No more judging in it (adjudication and export go on)."""

        def work(session: Session) -> CampaignRecord:
            row = self._row(session, name)
            if row.status != "closed":
                row.status, row.closed_at = "closed", precise_now()
            return self._record(session, row)

        return self.db.write(work)

    def assign(self, name: str, annotator: str, pair_ids: Sequence[str]) -> int:
        """Hand these items to ``annotator`` (any campaign; the overlap still holds). Returns how many
        were new; an item already full, or not in the campaign, is refused and nothing is assigned."""
        person = normalize_annotator(annotator)

        def work(session: Session) -> int:
            row = self._open_row(session, name)
            new = 0
            for pair_id in dict.fromkeys(pair_ids):
                item = self._item(session, row, pair_id)
                if self._has(session, row, pair_id, person):
                    continue
                if not self._claim(session, row, item.pair_id, person):
                    raise StudioError(f"Pair {pair_id[:64]} already has its {row.overlap} annotator(s).")
                new += 1
            return new

        return self.db.write(work, attempts=1)

    def _open_row(self, session: Session, name: str) -> CampaignRow:
        row = self._row(session, name)
        if row.status == "closed":
            raise StudioError(f"Campaign {row.name!r} is closed.")
        return row

    def _item(self, session: Session, row: CampaignRow, pair_id: str) -> CampaignItemRow:
        item = session.scalars(
            select(CampaignItemRow).where(
                CampaignItemRow.campaign_id == row.id, CampaignItemRow.pair_id == str(pair_id)
            )
        ).first()
        if item is None:
            raise StudioError(f"Pair {str(pair_id)[:64]!r} is not in campaign {row.name!r}.")
        return item

    def _has(self, session: Session, row: CampaignRow, pair_id: str, person: str) -> bool:
        annotator_id = self.preferences._annotator_id(session, person, create=False)
        return (
            annotator_id is not None
            and session.scalar(
                select(AssignmentRow.id).where(
                    AssignmentRow.campaign_id == row.id,
                    AssignmentRow.pair_id == pair_id,
                    AssignmentRow.annotator_id == annotator_id,
                )
            )
            is not None
        )

    def _claim(self, session: Session, row: CampaignRow, pair_id: str, person: str) -> bool:
        """Give ``pair_id`` to ``person`` if it has a place left: one conditional UPDATE of its claims
        (gold items have no limit) and the assignment, together or not at all."""
        annotator_id = self.preferences._annotator_id(session, person, create=True)
        item = and_(CampaignItemRow.campaign_id == row.id, CampaignItemRow.pair_id == pair_id)
        room = or_(CampaignItemRow.gold.is_not(None), CampaignItemRow.claims < row.overlap)
        try:
            with session.begin_nested():
                taken = session.execute(
                    update(CampaignItemRow).where(item, room).values(claims=CampaignItemRow.claims + 1)
                ).rowcount
                if taken != 1:
                    return False
                session.add(
                    AssignmentRow(
                        campaign_id=row.id, pair_id=pair_id, annotator_id=annotator_id, assigned_at=precise_now()
                    )
                )
                session.flush()
        except IntegrityError:  # this person holds it already (another tab claimed it a moment ago)
            return False
        return True

    # -- an annotator's queue ------------------------------------------------------------------
    def queue(self, name: str, annotator: str, limit: int = 10) -> list[QueueItem]:
        """This annotator's open items (assigned, not judged by them), in the campaign's order. In an
        ``open`` campaign, items are claimed here until they hold ``limit`` (or none is left)."""
        person = normalize_annotator(annotator)

        def work(session: Session) -> list[str]:
            row = self._row(session, name)
            if row.status == "closed":
                return []
            mine = self._open_items(session, row, person, limit)
            if row.assignment == "open" and (not row.annotators or person in row.annotators):
                while len(mine) < limit:
                    pair_id = self._claimable(session, row, person)
                    if pair_id is None or not self._claim(session, row, pair_id, person):
                        break
                    mine = self._open_items(session, row, person, limit)
            return mine

        with self.db.reading() as session:
            claiming = self._row(session, name).assignment == "open"  # only an open campaign writes here
            pair_ids = [] if claiming else work(session)
        if claiming:
            pair_ids = self.db.write(work)
        with self.db.reading() as session:
            rows = {r.id: r for r in session.scalars(select(PairRow).where(PairRow.id.in_(pair_ids)))}
            return _PageLoader(session, [rows[p] for p in pair_ids if p in rows]).items()

    def _open_items(self, session: Session, row: CampaignRow, person: str, limit: int) -> list[str]:
        annotator_id = self.preferences._annotator_id(session, person, create=False)
        if annotator_id is None:
            return []
        judged = exists().where(
            AnnotationRow.pair_id == AssignmentRow.pair_id, AnnotationRow.annotator_id == annotator_id
        )
        query = (
            select(AssignmentRow.pair_id)
            .join(
                CampaignItemRow,
                and_(CampaignItemRow.campaign_id == row.id, CampaignItemRow.pair_id == AssignmentRow.pair_id),
            )
            .where(AssignmentRow.campaign_id == row.id, AssignmentRow.annotator_id == annotator_id, ~judged)
            .order_by(CampaignItemRow.position)
            .limit(limit)
        )
        return list(session.scalars(query))

    def _claimable(self, session: Session, row: CampaignRow, person: str) -> str | None:
        annotator_id = self.preferences._annotator_id(session, person, create=True)
        held = exists().where(
            AssignmentRow.campaign_id == row.id,
            AssignmentRow.pair_id == CampaignItemRow.pair_id,
            AssignmentRow.annotator_id == annotator_id,
        )
        query = (
            select(CampaignItemRow.pair_id)
            .where(CampaignItemRow.campaign_id == row.id, ~held)
            .where(or_(CampaignItemRow.gold.is_not(None), CampaignItemRow.claims < row.overlap))
            .order_by(CampaignItemRow.position)
            .limit(1)
        )
        return session.scalar(query)

    def judge(
        self,
        name: str,
        annotator: str,
        pair_id: str,
        choice: str,
        rationale: str = "",
        tags: Sequence[str] = (),
        confidence: float | None = None,
        seconds: float | None = None,
        as_shown: bool = True,
    ) -> AnnotationRecord:
        """Judge an item assigned to ``annotator`` (its tags from the campaign's taxonomy, when it has one)."""
        person = normalize_annotator(annotator)
        fields = judgement_fields(choice, rationale, tags, confidence, seconds)

        def work(session: Session) -> AnnotationRecord:
            row = self._open_row(session, name)
            self._item(session, row, pair_id)
            if not self._has(session, row, pair_id, person):
                raise StudioError(f"Pair {str(pair_id)[:64]} is not assigned to {person} in campaign {row.name!r}.")
            outside = [t for t in fields["tags"] if row.taxonomy and t not in row.taxonomy]
            if outside:
                raise StudioError(
                    f"Label {outside[0][:40]!r} is not in the campaign's taxonomy ({', '.join(row.taxonomy)})."
                )
            record = self.preferences._judge_in(session, pair_id, person, fields, as_shown)
            version = session.scalar(select(func.max(GuidelinesRow.version)).where(GuidelinesRow.campaign_id == row.id))
            annotator_id = self.preferences._annotator_id(session, person, create=False)
            session.execute(
                update(AssignmentRow)
                .where(
                    AssignmentRow.campaign_id == row.id,
                    AssignmentRow.pair_id == pair_id,
                    AssignmentRow.annotator_id == annotator_id,
                )
                .values(guidelines_version=version)
            )
            return record

        return self.db.write(work)


def _guidelines_text(text: Any) -> str:
    value = "" if text is None else str(text)
    if len(value) > MAX_GUIDELINES:
        raise StudioError(f"Guidelines have at most {MAX_GUIDELINES:,} characters (got {len(value):,}).")
    return value
