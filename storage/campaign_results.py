"""A campaign's results: the judgements that count in it, progress, disagreements and their
adjudication, and each annotator's quality (part of :class:`~storage.campaigns.CampaignStore`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.orm import (
    AdjudicationRow,
    AnnotationRow,
    AnnotatorRow,
    AssignmentRow,
    CampaignItemRow,
    CampaignRow,
    PairRow,
)
from agent_studio.storage.records import AnnotationRecord
from agent_studio.storage.vocab import SWAP, normalize_annotator, normalize_choice, precise_now
from studio.evaluation.campaign import annotator_quality, disagreeing
from studio.evaluation.stats import agreement_report, is_person


@dataclass
class CampaignRecord:
    """A campaign as the store hands it out (no ORM object)."""

    id: str
    name: str
    filters: dict[str, Any]
    overlap: int
    assignment: str
    annotators: list[str]
    taxonomy: list[str]
    show_consequences: bool
    status: str
    created_at: str
    closed_at: str | None = None
    guidelines: str = ""
    guidelines_version: int = 0
    items: int = 0
    gold_items: int = 0


@dataclass
class AdjudicationRecord:
    pair_id: str
    adjudicator: str
    choice: str
    """Of the stored pair."""
    rationale: str = ""
    campaign: str | None = None
    updated_at: str = ""


@dataclass
class Disagreement:
    """An item whose judgements differ: every judgement (people's and machines'), and the decision if made."""

    pair_id: str
    judgements: list[AnnotationRecord] = field(default_factory=list)
    adjudication: AdjudicationRecord | None = None


class CampaignResults:
    """Progress, disagreements, adjudication and quality of a campaign."""

    db: Database
    preferences: Any

    # -- numbers -------------------------------------------------------------------------------
    def _judgements(self, session: Session, row: CampaignRow) -> list[tuple[AnnotationRecord, bool]]:
        """Every judgement of the campaign's pairs that counts in it, with whether its annotator was assigned
        the item: the assigned annotators' and machines' (people's made outside the campaign do not count)."""
        assigned = exists().where(
            AssignmentRow.campaign_id == row.id,
            AssignmentRow.pair_id == AnnotationRow.pair_id,
            AssignmentRow.annotator_id == AnnotationRow.annotator_id,
        )
        query = (
            select(AnnotationRow, AnnotatorRow.name, assigned)
            .join(AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id)
            .join(
                CampaignItemRow,
                and_(CampaignItemRow.campaign_id == row.id, CampaignItemRow.pair_id == AnnotationRow.pair_id),
            )
            .order_by(CampaignItemRow.position, AnnotationRow.id)
        )
        return [
            (self.preferences._annotation_record(judgement, who), bool(held))
            for judgement, who, held in session.execute(query)
            if held or not is_person(who)
        ]

    def votes(self, name: str, machines: bool = False) -> dict[str, dict[str, str]]:
        """pair -> annotator -> choice (of the stored pair) in the campaign (machines' too, if asked)."""
        with self.db.reading() as session:
            judgements = self._judgements(session, self._row(session, name))
        votes: dict[str, dict[str, str]] = defaultdict(dict)
        for judgement, assigned in judgements:
            if assigned or machines:
                votes[judgement.pair_id][judgement.annotator] = judgement.choice
        return dict(votes)

    def progress(self, name: str) -> dict[str, Any]:
        """Items, items with all their judgements, and per annotator: assigned and judged."""
        with self.db.reading() as session:
            row = self._row(session, name)
            judged = exists().where(
                AnnotationRow.pair_id == AssignmentRow.pair_id, AnnotationRow.annotator_id == AssignmentRow.annotator_id
            )
            per = session.execute(
                select(AnnotatorRow.name, func.count(), func.count(AnnotationRow.id))
                .select_from(AssignmentRow)
                .join(AnnotatorRow, AnnotatorRow.id == AssignmentRow.annotator_id)
                .outerjoin(
                    AnnotationRow,
                    and_(
                        AnnotationRow.pair_id == AssignmentRow.pair_id,
                        AnnotationRow.annotator_id == AssignmentRow.annotator_id,
                    ),
                )
                .where(AssignmentRow.campaign_id == row.id)
                .group_by(AnnotatorRow.name)
            ).all()
            done_per_item = (
                select(AssignmentRow.pair_id, func.count().label("done"))
                .where(AssignmentRow.campaign_id == row.id, judged)
                .group_by(AssignmentRow.pair_id)
                .subquery()
            )
            items = session.execute(
                select(func.count(), func.count(CampaignItemRow.gold), func.count(done_per_item.c.pair_id))
                .select_from(CampaignItemRow)
                .outerjoin(
                    done_per_item,
                    and_(done_per_item.c.pair_id == CampaignItemRow.pair_id, done_per_item.c.done >= row.overlap),
                )
                .where(CampaignItemRow.campaign_id == row.id)
            ).one()
            record = self._record(session, row)
        return {
            "campaign": record.name,
            "status": record.status,
            "items": items[0],
            "gold_items": items[1],
            "complete": items[2],
            "overlap": record.overlap,
            "annotators": {who: {"assigned": total, "judged": done} for who, total, done in sorted(per)},
        }

    def disagreements(self, name: str, settled: bool = True) -> list[Disagreement]:
        """The campaign's items (not gold) whose judgements disagree (:func:`disagreeing`); without
        ``settled``, only those not adjudicated yet."""
        with self.db.reading() as session:
            row = self._row(session, name)
            gold = set(
                session.scalars(
                    select(CampaignItemRow.pair_id).where(
                        CampaignItemRow.campaign_id == row.id, CampaignItemRow.gold.is_not(None)
                    )
                )
            )
            judgements = self._judgements(session, row)
        by_pair: dict[str, list[AnnotationRecord]] = defaultdict(list)
        for judgement, _assigned in judgements:
            by_pair[judgement.pair_id].append(judgement)
        decided = self.adjudications(name)
        found = []
        for pair_id, records in by_pair.items():
            labels = {r.annotator: r.choice for r in records}
            if pair_id in gold or not disagreeing(labels) or (not settled and pair_id in decided):
                continue
            found.append(Disagreement(pair_id, records, decided.get(pair_id)))
        return found

    def adjudicate(
        self, name: str, pair_id: str, adjudicator: str, choice: str, rationale: str = "", as_shown: bool = True
    ) -> AdjudicationRecord:
        """Decide an item; deciding again replaces the decision (never a judgement)."""
        person = normalize_annotator(adjudicator)
        value = normalize_choice(choice)

        def work(session: Session) -> AdjudicationRecord:
            row = self._row(session, name)
            self._item(session, row, pair_id)
            pair = session.get(PairRow, pair_id)
            stored = SWAP[value] if as_shown and pair.swapped else value
            now = precise_now()
            found = session.scalars(select(AdjudicationRow).where(AdjudicationRow.pair_id == pair_id)).first()
            if found is None:
                found = AdjudicationRow(pair_id=pair_id, created_at=now)
                session.add(found)
            found.campaign_id, found.adjudicator, found.choice = row.id, person, stored
            found.rationale, found.updated_at = str(rationale or ""), now
            session.flush()
            return AdjudicationRecord(pair_id, person, stored, found.rationale, row.name, now)

        return self.db.write(work)

    def adjudications(self, name: str | None = None) -> dict[str, AdjudicationRecord]:
        """pair -> its decision (in one campaign, or all)."""
        query = select(AdjudicationRow, CampaignRow.name).outerjoin(
            CampaignRow, CampaignRow.id == AdjudicationRow.campaign_id
        )
        with self.db.reading() as session:
            if name is not None:
                query = query.where(AdjudicationRow.campaign_id == self._row(session, name).id)
            return {
                a.pair_id: AdjudicationRecord(a.pair_id, a.adjudicator, a.choice, a.rationale, campaign, a.updated_at)
                for a, campaign in session.execute(query)
            }

    def quality(self, name: str) -> dict[str, Any]:
        """Per annotator (:func:`~studio.evaluation.campaign.annotator_quality`), and the campaign's agreement."""
        with self.db.reading() as session:
            row = self._row(session, name)
            gold = dict(
                session.execute(
                    select(CampaignItemRow.pair_id, CampaignItemRow.gold).where(
                        CampaignItemRow.campaign_id == row.id, CampaignItemRow.gold.is_not(None)
                    )
                ).all()
            )
            judgements = [judgement for judgement, assigned in self._judgements(session, row) if assigned]
        votes: dict[str, dict[str, str]] = defaultdict(dict)
        seconds: dict[str, list[float]] = defaultdict(list)
        for judgement in judgements:
            votes[judgement.pair_id][judgement.annotator] = judgement.choice
            if judgement.seconds is not None:
                seconds[judgement.annotator].append(judgement.seconds)
        decided = {p: a.choice for p, a in self.adjudications(name).items()}
        plain = {p: v for p, v in votes.items() if p not in gold}
        return {
            "annotators": annotator_quality(votes, decided, gold, seconds),
            "agreement": {k: v for k, v in agreement_report(plain).items() if k != "per_item"},
        }
