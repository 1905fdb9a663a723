"""One annotator's desk: the queue as they walk through it (the annotation panel's state).

The store keeps the queue, the judgements and the blind side mapping; the desk keeps what is
only this browser tab's: who is annotating, the filters, the pair on screen and when it
appeared (to record the time taken), and the pairs skipped in this sitting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent_studio.storage.records import AnnotationRecord, QueueItem
from agent_studio.storage.store import Store
from studio.errors import StudioError

#: The tags offered with a judgement unless the annotator sets their own.
DEFAULT_TAGS = ("correct", "redundant", "erroneous", "thought-action mismatch", "unsafe")
CONFIDENCE = {"low": 0.33, "medium": 0.67, "high": 1.0}


@dataclass
class AnnotationDesk:
    store: Store
    annotator: str = ""
    kind: str | None = None
    env: str | None = None
    source: str | None = None
    campaign: str | None = None
    """A campaign's name: the queue is then this annotator's items in it (the filters do not apply)."""
    tags: tuple[str, ...] = DEFAULT_TAGS
    item: QueueItem | None = None
    shown_at: float = 0.0
    skipped: set[str] = field(default_factory=set)
    #: Held by every handler that reads or changes the desk: a browser fires several events at
    #: once (the tab opening, the name submitted), and Gradio runs them in parallel.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __deepcopy__(self, memo: dict[int, Any]) -> AnnotationDesk:
        return self  # one desk per browser tab; Gradio deep-copies what a State factory returns

    def configure(
        self,
        annotator: str,
        kind: str | None = None,
        env: str | None = None,
        source: str | None = None,
        campaign: str | None = None,
    ) -> None:
        """Who annotates and which pairs; changing any of them starts the queue over."""
        filters = (annotator.strip(), kind or None, env or None, source or None, campaign or None)
        if filters != (self.annotator, self.kind, self.env, self.source, self.campaign):
            if filters[4] and filters[4] != self.campaign:
                taxonomy = self.store.campaigns.get(filters[4]).taxonomy  # one line for an unknown campaign
                self.tags = tuple(taxonomy) or DEFAULT_TAGS
            self.annotator, self.kind, self.env, self.source, self.campaign = filters
            self.item, self.skipped = None, set()

    def _require_annotator(self) -> str:
        if not self.annotator:
            raise StudioError("Type your name first (it is remembered in this browser).")
        return self.annotator

    def next(self) -> QueueItem | None:
        """The pair to show: the current one, or the next unjudged and unskipped one."""
        annotator = self._require_annotator()
        if self.item is None:
            if self.campaign:
                page = self.store.campaigns.queue(self.campaign, annotator, limit=len(self.skipped) + 1)
            else:
                page = self.store.preferences.queue(
                    annotator, limit=len(self.skipped) + 1, kind=self.kind, env=self.env, source=self.source
                )
            self.item = next((i for i in page if i.pair_id not in self.skipped), None)
            self.shown_at = time.monotonic()
        return self.item

    def forget_if_judged(self) -> None:
        """Drop the pair on screen if this annotator judged it meanwhile (say, in another tab)."""
        if (
            self.item is not None
            and self.annotator
            and self.store.preferences.annotations(pair_id=self.item.pair_id, annotator=self.annotator)
        ):
            self.item = None

    def judge(
        self, choice: str, rationale: str = "", tags: list[str] | None = None, confidence: str | float | None = None
    ) -> AnnotationRecord:
        """Judge the pair on screen (left/right as shown) and move on."""
        annotator = self._require_annotator()
        if self.item is None:
            raise StudioError("No pair on screen: the queue is empty, or press Refresh.")
        value = CONFIDENCE.get(confidence, confidence) if isinstance(confidence, str) else confidence
        seconds = round(time.monotonic() - self.shown_at, 3)
        if self.campaign:
            record = self.store.campaigns.judge(
                self.campaign, annotator, self.item.pair_id, choice, rationale, tags or [], value or None, seconds
            )
        else:
            record = self.store.preferences.annotate(
                self.item.pair_id,
                annotator,
                choice,
                rationale=rationale,
                tags=tags or [],
                confidence=value or None,
                seconds=seconds,
            )
        self.item = None
        return record

    def skip(self) -> None:
        """Leave the pair on screen for later (this sitting only)."""
        if self.item is not None:
            self.skipped.add(self.item.pair_id)
            self.item = None

    def undo(self) -> str | None:
        """Undo this annotator's last judgement and show that pair again (in a campaign, only a judgement
        of one of its items: the pair comes back to a queue that can judge it)."""
        annotator = self._require_annotator()
        if self.campaign:
            mine = self.store.preferences.annotations(annotator=annotator)
            if mine and mine[-1].pair_id not in self.store.campaigns.pair_ids(self.campaign):
                raise StudioError(
                    f"Your last judgement is not in campaign {self.campaign}: undo it with no campaign picked."
                )
        pair_id = self.store.preferences.undo(annotator)
        if pair_id is not None:
            self.skipped.discard(pair_id)
            self.item = self.store.preferences.item(pair_id)
            self.shown_at = time.monotonic()
        return pair_id

    def progress(self) -> tuple[int, int]:
        """(judged by this annotator, total) under the filters; in a campaign, of the items assigned to them."""
        if self.campaign:
            mine = self.store.campaigns.progress(self.campaign)["annotators"].get(self.annotator, {})
            return mine.get("judged", 0), mine.get("assigned", 0)
        return self.store.preferences.progress(self.annotator, self.kind, self.env, self.source)
