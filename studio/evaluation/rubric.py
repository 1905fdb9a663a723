"""Rubric judges over whole episodes: a question in plain words, a set of labels, a judge model that
answers with a label, an explanation and the steps it cites — and how far to trust it.

The judge reads the episode as numbered steps (``[step 3] saw ... thought ... did ...``) and the
rubric. The label is read from the model's own probabilities: each label is scored after
``Label:`` (one scoring pass, no sampling; a model that cannot score generates and the label is
read from its text). Then it writes its explanation after the chosen label, starting ``In step``; every
``step N`` it names is a citation, kept only where the episode has that step (the others are listed in the
provenance, never shown as links). :func:`agreement` scores a rubric judge against people's labels
of the same episodes (accuracy and Cohen's kappa, by scikit-learn) before it is trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from studio.errors import StudioError
from studio.models.base import Backend, SamplingParams
from studio.trace import Episode

#: Bump when what the judge reads changes (SYSTEM, :func:`rubric_messages`, :func:`episode_text`).
TEMPLATE_VERSION = 1
SYSTEM = (
    "You review a recorded episode of an agent against a rubric. Read the numbered steps, choose the one "
    "label that fits, then explain in one or two sentences, naming the steps that show it as 'step N'."
)
LABEL_PREFIX = "Label:"
#: How the judge's explanation begins: it names a step first.
CITE_START = "In step"
#: Characters kept of each step's observation, thought and action (a judge's context is finite).
STEP_CHARS = 400
MAX_STEPS = 60
NAME = re.compile(r"^[\w.:-]{1,100}$")
CITATION = re.compile(r"\bsteps?\s+(\d{1,6})(?:\s*(?:,|and|-|to)\s*(\d{1,6}))*", re.IGNORECASE)
NUMBER = re.compile(r"\d{1,6}")


@dataclass(frozen=True)
class Rubric:
    """A question asked of whole episodes, and the labels an answer may take."""

    name: str
    question: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not NAME.match(self.name or ""):
            raise StudioError(
                f"A rubric's name is 1 to 100 letters, digits, '-', '_', '.' or ':' (got {self.name[:40]!r})."
            )
        if not (self.question or "").strip() or len(self.question) > 4000:
            raise StudioError("A rubric needs a question of 1 to 4000 characters.")
        labels = tuple(label.strip() for label in self.labels)
        if not 2 <= len(labels) <= 12 or len(set(labels)) < len(labels) or not all(NAME.match(x) for x in labels):
            raise StudioError("A rubric needs 2 to 12 different labels, each one word (letters, digits, - _ . :).")
        object.__setattr__(self, "labels", labels)

    @property
    def digest(self) -> str:
        """SHA-256 of the question and labels: stored with each verdict (a changed rubric is another)."""
        return hashlib.sha256(json.dumps([self.question, list(self.labels)]).encode("utf-8")).hexdigest()


@dataclass
class RubricVerdict:
    """A judge's label of one episode under a rubric."""

    episode_id: str
    rubric: str
    judge: str
    label: str
    explanation: str
    citations: list[int]
    provenance: dict[str, Any] = field(default_factory=dict)


def clip(text: str | None, limit: int = STEP_CHARS) -> str:
    value = (text or "").replace("\n", " ").strip()
    return value if len(value) <= limit else value[:limit] + " …"


def episode_text(episode: Episode) -> str:
    """The episode as the judge reads it: the task, then one numbered block per step, then the outcome."""
    lines = [f"Task: {clip(episode.instruction, 2000)}"]
    for step in episode.steps[:MAX_STEPS]:
        lines.append(f"[step {step.index}] saw: {clip(step.observation)}")
        if step.thought:
            lines.append(f"  thought: {clip(step.thought)}")
        lines.append(
            f"  did: {clip(step.action or step.raw)}"
            + ("" if step.valid else f" (invalid: {clip(step.invalid_reason, 200)})")
        )
    if episode.length > MAX_STEPS:
        lines.append(f"[{episode.length - MAX_STEPS} more steps not shown]")
    outcome = {True: "succeeded", False: "failed", None: "unknown"}[episode.success]
    lines.append(f"Outcome: {outcome}")
    return "\n".join(lines)


def rubric_messages(rubric: Rubric, episode: Episode) -> list[dict[str, str]]:
    """The judge's chat: the rubric, the labels, the episode."""
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Rubric: {rubric.question}\nLabels: {', '.join(rubric.labels)}\n\n{episode_text(episode)}\n\n"
            f"Answer as '{LABEL_PREFIX} <label>' then 'Explanation: ...'.",
        },
    ]


def citations_in(text: str, steps: int) -> tuple[list[int], list[int]]:
    """The step numbers ``text`` names (``step 3``, ``steps 2 and 5``): those the episode has, and the others."""
    named: list[int] = []
    for match in CITATION.finditer(text or ""):
        named.extend(int(n) for n in NUMBER.findall(match.group(0)))
    unique = list(dict.fromkeys(named))
    return [n for n in unique if n < steps], [n for n in unique if n >= steps]


def label_in(text: str, labels: tuple[str, ...]) -> str | None:
    """The label a generated answer gives (after ``Label:``, else the first label word in it)."""
    after = text.split(LABEL_PREFIX, 1)[-1]
    for word in re.findall(r"[\w.:-]+", after):
        for label in labels:
            if word.lower() == label.lower():
                return label
    return None


def judge_episode(backend: Backend, rubric: Rubric, episode: Episode, max_new_tokens: int = 96) -> RubricVerdict:
    """``backend``'s label of ``episode`` under ``rubric``, its explanation and citations (module docstring)."""
    if not episode.steps:
        raise StudioError(f"Episode {episode.id} has no steps to judge.")
    messages = rubric_messages(rubric, episode)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    probabilities: dict[str, float] | None = None
    if backend.capabilities.scoring:
        result = backend.score(messages, [f" {label}" for label in rubric.labels], assistant_prefix=LABEL_PREFIX)
        totals = result.totals
        top = max(totals)
        norm = top + math.log(sum(math.exp(value - top) for value in totals))
        probabilities = {label: math.exp(value - norm) for label, value in zip(rubric.labels, totals)}
        label = max(probabilities, key=probabilities.__getitem__)
        method = "scored"
    else:
        answer = backend.generate(messages, 1, greedy, assistant_prefix=LABEL_PREFIX).generations[0].text
        label = label_in(f"{LABEL_PREFIX}{answer}", rubric.labels)
        if label is None:
            raise StudioError(f"The judge answered with no label of the rubric ({', '.join(rubric.labels)}).")
        method = "generated"
    # The explanation starts at a step: a judge cites the transcript (and a small model does too).
    prefix = f"{LABEL_PREFIX} {label}\nExplanation: {CITE_START}"
    written = backend.generate(messages, 1, greedy, stop=["\n\n"], assistant_prefix=prefix).generations[0].text
    explanation = f"{CITE_START}{written}".strip()
    cited, dropped = citations_in(explanation, episode.length)
    provenance = {
        "template_version": TEMPLATE_VERSION,
        "rubric_sha256": rubric.digest,
        "prompt_sha256": hashlib.sha256(json.dumps(messages).encode("utf-8")).hexdigest(),
        "method": method,
        "label_probabilities": probabilities,
        "dropped_citations": dropped,
        "model": backend.card.id,
    }
    return RubricVerdict(episode.id, rubric.name, backend.card.id, label, explanation[:4000], cited, provenance)


def agreement(machine: dict[str, str], human: dict[str, str], labels: tuple[str, ...] | None = None) -> dict[str, Any]:
    """How well a judge's labels match people's on the episodes both labelled: the count, accuracy and
    Cohen's kappa (scikit-learn's), and the confusion counts (human label -> judge label -> n)."""
    shared = sorted(set(machine) & set(human))
    if not shared:
        raise StudioError("No episode has both a judge's label and a person's: label some by hand first.")
    try:
        from sklearn.metrics import accuracy_score, cohen_kappa_score
    except ImportError:
        raise StudioError("Validating a judge needs scikit-learn: pip install 'agent-studio[import]'.") from None
    truth = [human[e] for e in shared]
    judged = [machine[e] for e in shared]
    kappa = float(cohen_kappa_score(truth, judged, labels=list(labels) if labels else None))
    confusion: dict[str, dict[str, int]] = {}
    for t, j in zip(truth, judged):
        confusion.setdefault(t, {}).setdefault(j, 0)
        confusion[t][j] += 1
    return {
        "episodes": len(shared),
        "accuracy": float(accuracy_score(truth, judged)),
        "kappa": kappa if not math.isnan(kappa) else None,
        "confusion": confusion,
    }
