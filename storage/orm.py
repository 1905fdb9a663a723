"""The database schema: typed SQLAlchemy 2 tables. Nothing here leaves ``storage/``.

Episodes, steps and candidates mirror the core's trace records column by column; the
large, rarely-queried parts of a step (the prompt and the environment snapshot) are
zlib-compressed JSON (so are token lists, the bulk of a model step), and frames are PNG bytes. Pairs, annotations, step labels and
annotators hold the preference data built on top of them.

The migrations in ``storage/migrations`` create exactly this schema (a test compares them).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(32)  # the core's record ids: at most 32 letters, digits, "_" or "-" (new ones are 32 hex)
TIME = String(32)  # ISO-8601 UTC strings, as the core records them (they sort in time order)


class CompressedJSON(TypeDecorator):
    """JSON stored zlib-compressed: prompts and snapshots repeat a lot and are read rarely."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> bytes | None:  # noqa: ANN001
        if value is None:
            return None
        return zlib.compress(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 6)

    def process_result_value(self, value: bytes | None, dialect) -> Any:  # noqa: ANN001
        return None if value is None else json.loads(zlib.decompress(value).decode("utf-8"))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ModelRow(Base):
    """A model that drove episodes (deduplicated by its description)."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # sha1 of the description
    name: Mapped[str] = mapped_column(Text, index=True)
    description: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[str] = mapped_column(TIME)


class EpisodeRow(Base):
    __tablename__ = "episodes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    env: Mapped[str] = mapped_column(String(200), index=True)
    seed: Mapped[int | None] = mapped_column(Integer)
    env_options: Mapped[dict[str, Any]] = mapped_column(JSON)
    instruction: Mapped[str] = mapped_column(Text)
    policy: Mapped[str] = mapped_column(Text, index=True)
    policy_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    success: Mapped[bool | None] = mapped_column(Boolean)
    end_reason: Mapped[str | None] = mapped_column(Text)
    # No foreign key: a fork's parent may live in a file, not in this database.
    parent_id: Mapped[str | None] = mapped_column(ID, index=True)
    forked_at: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[str] = mapped_column(TIME, index=True)
    ended_at: Mapped[str | None] = mapped_column(TIME)
    schema_version: Mapped[int] = mapped_column(Integer)
    # No foreign key, as for parents: an imported episode may name a sweep of another database.
    sweep_id: Mapped[str | None] = mapped_column(ID, index=True)
    sweep_cell: Mapped[int | None] = mapped_column(Integer)
    max_steps: Mapped[int | None] = mapped_column(Integer)  # the step limit it ran under (None: not recorded)
    # The process that runs it ("HOST pid N"), while it runs: an episode left running by a process that
    # died is ended at the next start. None for imported episodes.
    runner: Mapped[str | None] = mapped_column(Text)
    length: Mapped[int] = mapped_column(Integer, default=0)
    # Where an imported episode came from (:attr:`studio.trace.Episode.source`); its format is a column
    # of its own, for the source filter. None for the studio's own episodes.
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_format: Mapped[str | None] = mapped_column(String(40), index=True)
    total_return: Mapped[float] = mapped_column(Float, default=0.0)


class StepRow(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("episode_id", "index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    observation: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    thought: Mapped[str | None] = mapped_column(Text)
    valid: Mapped[bool] = mapped_column(Boolean)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    reward: Mapped[float] = mapped_column(Float)
    terminated: Mapped[bool] = mapped_column(Boolean)
    truncated: Mapped[bool] = mapped_column(Boolean)
    next_observation: Mapped[str] = mapped_column(Text)
    prompt: Mapped[list[dict[str, Any]] | None] = mapped_column(CompressedJSON)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    timing: Mapped[dict[str, float]] = mapped_column(JSON)
    tokens: Mapped[list[dict[str, Any]] | None] = mapped_column(CompressedJSON)  # repetitive, large
    action_logprobs: Mapped[dict[str, float] | None] = mapped_column(JSON)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)
    frame: Mapped[bytes | None] = mapped_column(LargeBinary)  # PNG
    state: Mapped[dict[str, Any] | None] = mapped_column(CompressedJSON)


class CandidateRow(Base):
    __tablename__ = "candidates"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    raw: Mapped[str] = mapped_column(Text)
    thought: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(Text)
    valid: Mapped[bool] = mapped_column(Boolean)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    tokens: Mapped[list[dict[str, Any]] | None] = mapped_column(CompressedJSON)  # repetitive, large


class AnnotatorRow(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[str] = mapped_column(TIME)


class PairRow(Base):
    """Two things to compare under one shared context.

    A side is an episode (trajectory pairs) or an output at one step: the step's chosen
    output (``candidate_id`` None) or one of its candidates. ``swapped`` is drawn once,
    when the pair is made: blind views show the right side on the left when it is set.
    ``shuffle`` is a random key that gives every queue a stable randomised order.
    """

    __tablename__ = "pairs"
    __table_args__ = (Index("ix_pairs_filter", "kind", "env", "source"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # the sides, canonically: no duplicate pairs
    kind: Mapped[str] = mapped_column(String(20))  # step | trajectory
    source: Mapped[str] = mapped_column(String(20))  # candidates | episodes | manual
    env: Mapped[str] = mapped_column(String(200))
    step_index: Mapped[int | None] = mapped_column(Integer)
    left_episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    left_candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    right_episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    right_candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    swapped: Mapped[bool] = mapped_column(Boolean)
    shuffle: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[str] = mapped_column(TIME)


class AnnotationRow(Base):
    """One annotator's judgement of one pair; a re-submit updates it (``previous`` keeps one undo)."""

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("pair_id", "annotator_id"),
        Index("ix_annotations_annotator_updated", "annotator_id", "updated_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pair_id: Mapped[str] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"))
    choice: Mapped[str] = mapped_column(String(20))  # left | right | tie | both_bad, of the stored pair
    rationale: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON)
    confidence: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[str] = mapped_column(TIME)
    updated_at: Mapped[str] = mapped_column(TIME)
    previous: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # How a machine came to its verdict (a judge's prompt hashes, template version and each stored
    # side's probability; the values' Q of each side), so that it can be derived again. None for people.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StepLabelRow(Base):
    """An annotator's label of one step (process supervision)."""

    __tablename__ = "step_labels"
    __table_args__ = (UniqueConstraint("step_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(50))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(TIME)
    updated_at: Mapped[str] = mapped_column(TIME)


class StepValueRow(Base):
    """A Monte Carlo value of one output of one step (:class:`studio.scaling.values.StepValue`): one per
    output and estimate settings; estimating again with the same settings replaces it."""

    __tablename__ = "step_values"
    __table_args__ = (UniqueConstraint("step_id", "output", "settings"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    output: Mapped[str] = mapped_column(String(40))  # taken | candidate N
    candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    settings: Mapped[str] = mapped_column(String(200))  # expert-m4-h5
    action: Mapped[str] = mapped_column(Text)
    q: Mapped[float] = mapped_column(Float)
    stderr: Mapped[float] = mapped_column(Float)
    hard: Mapped[bool] = mapped_column(Boolean)
    soft: Mapped[float] = mapped_column(Float)
    valid: Mapped[bool] = mapped_column(Boolean)
    rollout_policy: Mapped[str] = mapped_column(Text)
    rollouts: Mapped[int] = mapped_column(Integer)
    horizon: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)  # returns, successes, lengths, seeds
    created_at: Mapped[str] = mapped_column(TIME)


class SweepRow(Base):
    """An evaluation sweep: models x environments x seeds, run as ordinary episodes tagged with it
    (``episodes.sweep_id``, and ``sweep_cell`` for which cell); ``spec`` is :class:`studio.evaluation.sweep.SweepSpec`."""

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    cells: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[str] = mapped_column(TIME)
    # Who runs it now (host, process, run) and when they last said so: a second runner is refused
    # while the heartbeat is fresh, and takes over a stale one (:class:`storage.sweeps.SweepLease`).
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_heartbeat: Mapped[str | None] = mapped_column(TIME)


class CrossScoreRow(Base):
    """Another model's view of one step's output (:class:`studio.evaluation.crossscore.CrossScore`): one per step
    and scoring model; scoring again replaces it."""

    __tablename__ = "cross_scores"
    __table_args__ = (UniqueConstraint("step_id", "scorer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    scorer: Mapped[str] = mapped_column(String(200))
    tokens: Mapped[list[dict[str, Any]]] = mapped_column(CompressedJSON)
    total: Mapped[float] = mapped_column(Float)
    own_total: Mapped[float | None] = mapped_column(Float)
    preferred: Mapped[str | None] = mapped_column(Text)
    action_logprobs: Mapped[dict[str, float] | None] = mapped_column(JSON)
    created_at: Mapped[str] = mapped_column(TIME)


class TagRow(Base):
    """A word put on an episode (``step_index`` None) or on one of its steps, to find it again."""

    __tablename__ = "tags"
    __table_args__ = (Index("ix_tags_tag_episode", "tag", "episode_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    step_index: Mapped[int | None] = mapped_column(Integer)
    tag: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(TIME)


class NoteRow(Base):
    """A free note on an episode (``step_index`` None) or one of its steps; full-text searched with the steps."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    step_index: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(TIME)


class RubricLabelRow(Base):
    """One label of a whole episode under a rubric: a judge model's (``judge`` its name, with its
    explanation, the steps it cites and how it was asked) or a person's (``judge`` ``human:NAME``),
    which a rubric judge is validated against. Labelling again replaces it."""

    __tablename__ = "rubric_labels"
    __table_args__ = (UniqueConstraint("episode_id", "rubric", "judge"), Index("ix_rubric_labels_rubric", "rubric"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    rubric: Mapped[str] = mapped_column(String(100))  # the rubric's name
    judge: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(100))
    explanation: Mapped[str] = mapped_column(Text, default="")
    citations: Mapped[list[int]] = mapped_column(JSON)  # step indices, each checked to exist
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # rubric text hash, prompt hash, model
    created_at: Mapped[str] = mapped_column(TIME)


class TrainingRunRow(Base):
    """A training run (:mod:`studio.training`): its spec, the data snapshot it read (row counts per
    source, the rows' hash, the held-out seeds), its status and, when done, its record (loss curve,
    held-out pair accuracy, time); the weights are in the trained-models folder under ``name``."""

    __tablename__ = "training_runs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    base: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[str] = mapped_column(TIME)
    finished_at: Mapped[str | None] = mapped_column(TIME)


class CampaignRow(Base):
    """A named annotation campaign: which pairs (chosen by ``filters`` when it was made), how many people
    judge each (``overlap``), who (``annotators``; none in ``open`` campaigns: anyone who asks), how items
    are handed out (``assignment``), the labels offered (``taxonomy``), and whether annotators may see
    what each action leads to (``show_consequences``)."""

    __tablename__ = "campaigns"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    overlap: Mapped[int] = mapped_column(Integer)
    assignment: Mapped[str] = mapped_column(String(20))  # round-robin | open | explicit
    annotators: Mapped[list[str]] = mapped_column(JSON)
    taxonomy: Mapped[list[str]] = mapped_column(JSON)
    show_consequences: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))  # open | closed
    created_at: Mapped[str] = mapped_column(TIME)
    closed_at: Mapped[str | None] = mapped_column(TIME)


class GuidelinesRow(Base):
    """One version of a campaign's guidelines (markdown); editing adds a version, never replaces one."""

    __tablename__ = "campaign_guidelines"
    __table_args__ = (UniqueConstraint("campaign_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(TIME)


class CampaignItemRow(Base):
    """A pair in a campaign: its place in the campaign's order, its known answer when it is a gold item
    (a choice of the stored pair), and how many annotators hold it (``claims``, raised only by a
    conditional UPDATE, so that two processes cannot both take the last place)."""

    __tablename__ = "campaign_items"
    __table_args__ = (
        UniqueConstraint("campaign_id", "pair_id"),
        Index("ix_campaign_items_order", "campaign_id", "position"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    pair_id: Mapped[str] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    gold: Mapped[str | None] = mapped_column(String(20))
    claims: Mapped[int] = mapped_column(Integer, default=0)


class AssignmentRow(Base):
    """One annotator's assignment of one campaign item, and the guidelines version they judged it under."""

    __tablename__ = "campaign_assignments"
    __table_args__ = (UniqueConstraint("campaign_id", "pair_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    pair_id: Mapped[str] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    assigned_at: Mapped[str] = mapped_column(TIME)
    guidelines_version: Mapped[int | None] = mapped_column(Integer)


class AdjudicationRow(Base):
    """An adjudicator's decision on a pair the annotators disagreed on: a record of its own, beside the
    judgements it settles (which stay as they were). Exports follow it where it exists."""

    __tablename__ = "adjudications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pair_id: Mapped[str] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), unique=True)
    campaign_id: Mapped[str | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"), index=True)
    adjudicator: Mapped[str] = mapped_column(String(200))
    choice: Mapped[str] = mapped_column(String(20))  # of the stored pair
    rationale: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(TIME)
    updated_at: Mapped[str] = mapped_column(TIME)
