"""Trace records: the one thing every view of the studio reads.

An :class:`Episode` is an agent acting in an environment: a list of :class:`Step` records,
each with what the policy saw (observation, frame, prompt), what it produced (raw output,
thought, action, token-level data, alternative :class:`Candidate` outputs) and what the
environment answered (reward, termination, the next observation).

Records are plain dataclasses. ``to_dict`` / ``from_dict`` give a JSON-ready form that
round-trips losslessly (frames are stored as PNG, which is lossless). Every serialised
episode carries ``schema_version``; ``from_dict`` accepts older versions by filling new
fields with their defaults and refuses newer ones with a clear message.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.frames import PNG_SIGNATURE, decode_frame, encode_frame, frame_to_png, png_to_frame  # noqa: F401 - the records' codecs, importable from here too
from studio.validation import MAX_ITEMS, MAX_NAME, MAX_SEED, ID_PATTERN, check_record, fail, limits

#: Bump when a field is added, renamed or changes meaning; add a migration in ``from_dict``.
#: 2: token records may carry ``top`` (the model's most likely alternatives); 1 reads unchanged.
#: 3: episodes record their step limit (``max_steps``); 1 and 2 read with it unknown (None).
#: 4: an imported episode says where it came from (``source``); older versions read with None (the studio's own).
SCHEMA_VERSION = 4


def new_id() -> str:
    """A new random record id (32 hex characters)."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (what records store)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


#: How the end reason of an episode its user left unfinished begins (reset, forked, tab closed).
ABANDONED = "abandoned"
#: How the end reason of an episode cut off before its end begins: Stop, a step that could not be
#: stored, an interrupted sweep.
STOPPED_PREFIX = "stopped"
#: End reasons of episodes that did not run to an outcome begin with one of these.
UNFINISHED_REASONS = (ABANDONED, STOPPED_PREFIX)

#: Who wrote a token of a stored output. ``model``: sampled by the model. ``forced``: written
#: into the turn by the policy before the model generated (the ``Thought:`` a ReAct turn starts
#: with). ``inserted``: written by the policy between the model's pieces (the ``\nAction:`` of a
#: nudged or score-mode step). ``scored``: a continuation the policy chose by scoring (a
#: score-mode action). Every kind carries the model's log-probability of that token in context.
TOKEN_ORIGINS = ("model", "forced", "inserted", "scored")


@dataclass(frozen=True)
class TokenAlternative:
    """One of the model's most likely tokens at a position: what it could have written there."""

    id: int = field(metadata=limits(minimum=0))
    """Token id in the model's vocabulary."""
    text: str = field(metadata=limits(max_length=1_000))
    """The token's text on its own."""
    logprob: float = field(metadata=limits(negative_infinity=True))
    """Its log-probability at that position (raw distribution, as :attr:`TokenInfo.logprob`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "logprob": self.logprob}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenAlternative:
        return cls(id=data["id"], text=data["text"], logprob=data["logprob"])


#: Alternatives kept per token (the most likely first).
MAX_ALTERNATIVES = 20


@dataclass
class TokenInfo:
    """One token of a stored output, with the model's confidence in it.

    The tokens of an output, in order, spell exactly its ``raw`` text.
    """

    id: int = field(metadata=limits(minimum=0))
    """Token id in the model's vocabulary."""
    text: str = field(metadata=limits(max_length=10_000))
    """The text this token adds to the output (its share of the decoded sequence)."""
    logprob: float = field(metadata=limits(negative_infinity=True))
    """Log-probability the model gave this token at its position (raw distribution: temperature 1, no top-p)."""
    entropy: float | None = None
    """Entropy (nats) of the model's next-token distribution at this position (None where not computed)."""
    origin: str = field(
        default="model",
        metadata=limits(
            pattern=re.compile("|".join(TOKEN_ORIGINS)), expected=f"expected one of {', '.join(TOKEN_ORIGINS)}"
        ),
    )
    """Who wrote it: one of :data:`TOKEN_ORIGINS`."""
    top: list[TokenAlternative] | None = field(default=None, metadata=limits(max_items=MAX_ALTERNATIVES))
    """The model's most likely tokens at this position, most likely first (None where the backend
    does not report them)."""

    @property
    def generated(self) -> bool:
        """Sampled by the model (not forced, inserted or scored by the policy)."""
        return self.origin == "model"

    def to_dict(self) -> dict[str, Any]:
        data = {"id": self.id, "text": self.text, "logprob": self.logprob, "entropy": self.entropy}
        if self.origin != "model":  # absent means sampled by the model (and records written before origins)
            data["origin"] = self.origin
        if self.top is not None:  # absent: not reported (and records written before schema 2)
            data["top"] = [alternative.to_dict() for alternative in self.top]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenInfo:
        return cls(
            id=data["id"],
            text=data["text"],
            logprob=data["logprob"],
            entropy=data.get("entropy"),
            origin=data.get("origin", "model"),
            top=None if data.get("top") is None else [TokenAlternative.from_dict(a) for a in data["top"]],
        )


def tokens_to_list(tokens: list[TokenInfo] | None) -> list[dict[str, Any]] | None:
    """Token records as JSON-ready dicts (None stays None)."""
    return None if tokens is None else [t.to_dict() for t in tokens]


def tokens_from_list(data: list[dict[str, Any]] | None) -> list[TokenInfo] | None:
    """Inverse of :func:`tokens_to_list`."""
    return None if data is None else [TokenInfo.from_dict(t) for t in data]


@dataclass
class Candidate:
    """An alternative output sampled at the same step (the step's chosen output is on the Step)."""

    raw: str
    """The full text the policy produced."""
    thought: str | None = None
    """Parsed reasoning, if any."""
    action: str | None = None
    """Parsed action (canonical form when valid), or None when none could be parsed."""
    valid: bool = True
    """Whether the action was parseable and allowed in the environment's current state."""
    invalid_reason: str | None = None
    """Why the action was not valid (one sentence), else None."""
    tokens: list[TokenInfo] | None = None
    """Token-level data, filled by model policies."""
    id: str = field(default_factory=new_id, metadata=limits(pattern=ID_PATTERN))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "raw": self.raw,
            "thought": self.thought,
            "action": self.action,
            "valid": self.valid,
            "invalid_reason": self.invalid_reason,
            "tokens": tokens_to_list(self.tokens),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(
            id=data["id"],
            raw=data["raw"],
            thought=data.get("thought"),
            action=data.get("action"),
            valid=data.get("valid", True),
            invalid_reason=data.get("invalid_reason"),
            tokens=tokens_from_list(data.get("tokens")),
        )


#: Step fields that are large (a PNG frame, an environment snapshot, the whole prompt): summaries,
#: API answers and queue pages leave them out; the full record has them.
HEAVY_STEP_FIELDS = ("prompt", "state", "frame")
#: The name of the output a step took, among its outputs (the others are ``candidate N``).
TAKEN = "taken"


@dataclass(frozen=True)
class Output:
    """One output of a step as every view names it: the one taken, or candidate N."""

    name: str
    """``taken`` or ``candidate N`` (1-based): what the UI shows and the API accepts."""
    raw: str
    thought: str | None
    action: str | None
    valid: bool
    invalid_reason: str | None
    tokens: list[TokenInfo] | None
    candidate_id: str | None = None
    """The candidate's id (None for the output taken, which is the step's own)."""


@dataclass
class Step:
    """One decision of the agent and the environment's answer to it."""

    index: int = field(metadata=limits(minimum=0, maximum=MAX_ITEMS))
    """0-based position in the episode."""
    observation: str
    """Text observation the policy saw when it decided (the environment's state before acting)."""
    action: str | None
    """The action sent to the environment (canonical form when valid); None if none was parsed."""
    frame: np.ndarray | None = None
    """RGB frame (H, W, 3) uint8 of the same observation, when frames are recorded."""
    actor: str = field(default="", metadata=limits(max_length=MAX_NAME))
    """Who decided this step: the policy name (``expert``, ``random``, ...) or ``human``."""
    prompt: list[dict[str, Any]] | None = None
    """The chat messages a model policy saw (role/content dicts), else None."""
    raw: str = ""
    """The policy's raw output text (for scripted policies, the action itself)."""
    thought: str | None = None
    """Parsed reasoning, if the policy produced any."""
    valid: bool = True
    """Whether the action was parseable and allowed; invalid steps leave the environment unchanged."""
    invalid_reason: str | None = None
    """Why the action was invalid (one sentence), else None."""
    reward: float = 0.0
    """Reward the environment gave for this step."""
    terminated: bool = False
    """The environment reached a terminal state (Gymnasium semantics)."""
    truncated: bool = False
    """The episode was cut short (step limit, too many invalid actions)."""
    next_observation: str = ""
    """What the environment answered: the text observation after the action."""
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable extra information from the environment."""
    timing: dict[str, float] = field(default_factory=dict)
    """Seconds spent, e.g. ``policy_s`` and ``env_s``; model policies add their own entries."""
    tokens: list[TokenInfo] | None = None
    """Token-level data of the chosen output (ids, text, logprob, entropy), from model policies."""
    action_logprobs: dict[str, float] | None = field(default=None, metadata=limits(negative_infinity=True))
    """Log-probability of every valid action when the policy scores them, else None."""
    candidates: list[Candidate] = field(default_factory=list, metadata=limits(max_items=64))
    """Alternative outputs sampled at this step."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Policy-specific JSON-serialisable data (e.g. KV-cache reuse statistics)."""
    state: dict[str, Any] | None = None
    """Environment snapshot before the action (``env.get_state()``), so a fork can restore it."""

    def outputs(self) -> list[Output]:
        """The output taken, then each candidate, as :class:`Output` records."""
        taken = Output(TAKEN, self.raw, self.thought, self.action, self.valid, self.invalid_reason, self.tokens)
        return [
            taken,
            *(
                Output(f"candidate {number}", c.raw, c.thought, c.action, c.valid, c.invalid_reason, c.tokens, c.id)
                for number, c in enumerate(self.candidates, 1)
            ),
        ]

    def output(self, name: str) -> Output:
        """The output called ``name``; a one-line StudioError naming the step's outputs if none is."""
        from studio.errors import StudioError

        found = next((output for output in self.outputs() if output.name == name), None)
        if found is None:
            others = f" or candidate 1 to {len(self.candidates)}" if self.candidates else ""
            raise StudioError(f"Step {self.index} has no {str(name)[:40]}: pick {TAKEN}{others}.")
        return found

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "frame":
                value = encode_frame(value)
            elif f.name == "tokens":
                value = tokens_to_list(value)
            elif f.name == "candidates":
                value = [c.to_dict() for c in value]
            else:
                value = copy.deepcopy(value)
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        known = {f.name for f in fields(cls)}
        kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        kwargs["frame"] = decode_frame(data.get("frame"))
        kwargs["tokens"] = tokens_from_list(data.get("tokens"))
        kwargs["candidates"] = [Candidate.from_dict(c) for c in data.get("candidates", [])]
        return cls(**kwargs)


@dataclass
class Episode:
    """An agent acting in an environment from one reset: its steps and outcome."""

    env: str = field(metadata=limits(max_length=MAX_NAME))
    """Registered environment name, e.g. ``gridworld`` or ``gym:FrozenLake-v1``."""
    seed: int | None = field(metadata=limits(minimum=0, maximum=MAX_SEED))
    """Seed given to ``reset``; the same name, options and seed give the same task."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """Options the environment was made with (after defaults were filled in)."""
    instruction: str = ""
    """The task instruction the agent was given."""
    policy: str = field(default="", metadata=limits(max_length=MAX_NAME))
    """Name of the policy that started the episode (steps record their own actor)."""
    policy_config: dict[str, Any] = field(default_factory=dict)
    """Settings of that policy (sampling parameters, action mode, ...)."""
    model: dict[str, Any] | None = None
    """Description of the model behind the policy (id, revision, dtype, ...), if any."""
    steps: list[Step] = field(default_factory=list)
    success: bool | None = None
    """Whether the task was achieved; None while the episode is running, when it was stopped or
    abandoned before its end, and when the environment has no notion of success (see :attr:`complete`)."""
    end_reason: str | None = field(default=None, metadata=limits(max_length=1_000))
    """Why it ended: e.g. ``goal reached``, ``step limit``, ``too many invalid actions``."""
    id: str = field(default_factory=new_id, metadata=limits(pattern=ID_PATTERN))
    parent_id: str | None = field(default=None, metadata=limits(pattern=ID_PATTERN))
    """For a fork: the episode it was forked from."""
    forked_at: int | None = field(default=None, metadata=limits(minimum=0, maximum=MAX_ITEMS))
    """For a fork: the step index it branched at (steps before it are copies of the parent's)."""
    started_at: str = field(default_factory=utc_now, metadata=limits(max_length=32, datetime=True))
    ended_at: str | None = field(default=None, metadata=limits(max_length=32, datetime=True))
    sweep: str | None = field(default=None, metadata=limits(pattern=ID_PATTERN))
    """For an episode of a sweep (:mod:`studio.evaluation.sweep`): the sweep's id."""
    sweep_cell: int | None = field(default=None, metadata=limits(minimum=0, maximum=MAX_ITEMS))
    """For an episode of a sweep: which of its (model, environment, seed) cells it ran."""
    max_steps: int | None = field(default=None, metadata=limits(minimum=1, maximum=MAX_ITEMS))
    """The step limit the episode ran under (the studio's or the environment's); None where it was not
    recorded (episodes of trace schema 1 and 2). Comparisons keep episodes of different limits apart,
    and step values roll out to it."""
    source: dict[str, Any] | None = None
    """For an episode recorded elsewhere and imported (:mod:`studio.importers`): where it came from —
    ``format``, ``file``, ``sha256`` of the file, the record's ``key`` inside it — and what it lacks
    (``prompt``: ``recorded`` or ``rebuilt`` from the messages; no snapshots means no forks or values).
    None for an episode the studio ran."""
    schema_version: int = field(default=SCHEMA_VERSION, metadata=limits(minimum=1))

    @property
    def acted_by(self) -> str:
        """Who played the episode: the model's id, else the policy's name (expert, random, human)."""
        return str((self.model or {}).get("id") or self.policy)

    @property
    def total_return(self) -> float:
        """Sum of the step rewards."""
        return float(sum(s.reward for s in self.steps))

    @property
    def length(self) -> int:
        """Number of steps taken."""
        return len(self.steps)

    @property
    def done(self) -> bool:
        """True once the last step terminated or truncated the episode, or the episode was ended
        otherwise (e.g. stopped because a step could not be stored)."""
        return self.ended_at is not None or (
            bool(self.steps) and (self.steps[-1].terminated or self.steps[-1].truncated)
        )

    @property
    def complete(self) -> bool:
        """Ran to its end — terminated, truncated by a limit or ended by too many invalid actions — and
        was not stopped or abandoned before it: what comparisons, sweeps and coverage count. Its
        :attr:`success` is None where the environment has no notion of success (Pendulum)."""
        return self.done and not (self.end_reason or "").startswith(UNFINISHED_REASONS)

    def summary(self) -> dict[str, Any]:
        """The fields the CLI prints per episode."""
        return {
            "episode_id": self.id,
            "env": self.env,
            "seed": self.seed,
            "policy": self.policy,
            "success": self.success,
            "return": self.total_return,
            "steps": self.length,
            "end_reason": self.end_reason,
        }

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = [s.to_dict() for s in value] if f.name == "steps" else copy.deepcopy(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        """An episode from its JSON form, checked field by field first (it may come from anyone)."""
        if not isinstance(data, dict):
            fail("", "expected a JSON object")
        version = data.get("schema_version", 1)
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise StudioError(
                f"This episode uses trace schema version {version}, newer than this studio "
                f"understands ({SCHEMA_VERSION}); upgrade Agent Studio to read it."
            )
        validate_episode(data)
        known = {f.name for f in fields(cls)}
        kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in known and k != "steps"}
        kwargs["steps"] = []
        for position, step in enumerate(data.get("steps", [])):
            try:
                kwargs["steps"].append(Step.from_dict(step))
            except StudioError as exc:
                fail(f"steps[{position}].frame", str(exc).removeprefix("The frame ").rstrip("."))
        kwargs["schema_version"] = SCHEMA_VERSION
        return cls(**kwargs)

    def validate(self) -> None:
        """Raise :class:`StudioError` naming the first field that is not what the trace format allows."""
        validate_episode(self)

    def to_json(self) -> str:
        """One line of JSON (the episodes JSONL format)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Episode:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StudioError(f"Not a valid episode record: {exc.msg} at line {exc.lineno}.") from None
        except RecursionError:
            raise StudioError("Not a valid episode record: the JSON is nested too deeply.") from None
        if not isinstance(data, dict) or "env" not in data:
            raise StudioError("Not a valid episode record: expected a JSON object with an 'env' field.")
        try:
            return cls.from_dict(data)
        except StudioError as exc:
            raise StudioError(f"Not a valid episode record: {exc}") from None


def validate_episode(episode: Episode | dict[str, Any]) -> None:
    """Check an episode (its JSON form or the record) against the trace format and its limits.

    Beyond each field's type and limits: steps are numbered 0, 1, 2, ... in order, and a
    fork's branch point lies within its steps.
    """
    check_record(Episode, episode)
    steps = episode.steps if isinstance(episode, Episode) else episode.get("steps", [])
    for position, step in enumerate(steps):
        index = step.index if isinstance(step, Step) else step["index"]
        if index != position:
            fail(f"steps[{position}].index", f"expected {position} (steps are numbered in order from 0)")
    forked_at = episode.forked_at if isinstance(episode, Episode) else episode.get("forked_at")
    if forked_at is not None and forked_at > len(steps):
        fail("forked_at", "points past the last step")


def read_episodes_jsonl(path: str) -> list[Episode]:
    """Read every episode from a JSONL file written by the runner or the CLI.

    Every record is checked (:func:`validate_episode`); the first bad one is refused with
    its line number and field, and nothing is returned.
    """
    episodes = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        episodes.append(Episode.from_json(line))
                    except StudioError as exc:
                        raise StudioError(f"{path}, line {number}: {exc}") from None
    except UnicodeDecodeError:
        raise StudioError(f"{path} is not a UTF-8 text file (expected episodes as JSON lines).") from None
    except IsADirectoryError:
        raise StudioError(f"{path} is a folder, not a file of episodes.") from None
    except OSError as exc:
        raise StudioError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return episodes
