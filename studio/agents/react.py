"""The ReAct policy: a model thinks, then acts, in chat turns.

The prompt is a chat: a system message (task, answer format, valid actions when they are
fixed, and a short example taken from the expert on another seed of the same
environment), then one user turn per observation and one assistant turn per step, exactly
as the model produced it. Because earlier turns are never rewritten, each step's prompt
extends the previous one and the backend encodes only the new turns (KV-cache reuse);
when the history outgrows its token budget the oldest half is dropped at once, so the
prefix changes rarely (that step records a full re-encode).

Two action modes:

- ``generate``: the model writes ``Thought: ... Action: ...``; the core parser reads it
  and the environment validates it (an invalid action is recorded, the episode goes on).
- ``score``: the model writes the thought; then every valid action is scored in one pass
  and the most likely one is taken. The full distribution over valid actions is stored on
  the step, and the action is never invalid. Environments without a finite action set rank the
  actions they offer for scoring (web pages: a click on each interactive element,
  ``StudioEnv.score_choices``), or (wikihop) fall back to ``generate`` for the action.

With ``candidates`` K > 1, K outputs are sampled in one batch; the first valid one is
taken and the others are kept on the step as candidates.

The prompt is built in :mod:`studio.agents.react_prompt`; this module decides.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from studio.agents.base import Decision, Observation, StopCheck, never_stop
from studio.agents.parsing import parse_react
from studio.agents.react_prompt import (  # noqa: F401 - EXAMPLE_TITLES, FORMAT, expert_thought: their old home, for one release
    EXAMPLE_TITLES,
    FORMAT,
    GENERATE_STOP,
    STOP,
    THOUGHT,
    ReActConfig,
    ReActPrompt,
    expert_thought,
)
from studio.envs.base import StudioEnv
from studio.errors import StudioError
from studio.models.base import (
    Backend,
    CacheStats,
    GenerateResult,
    Generation,
    PrefixSession,
    SamplingParams,
    TokenListener,
    stopping,
)
from studio.internals.activations import keep_decision_point
from studio.models.steered import steering_of
from studio.models.steering import DecisionRecorder, recording
from studio.trace import Candidate, Episode, TokenInfo


class ReActPolicy(ReActPrompt):
    """A model-driven ReAct agent."""

    name = "react"

    def __init__(self, backend: Backend, config: ReActConfig | None = None) -> None:
        self.backend = backend
        self.config = config or ReActConfig()
        if self.config.action_mode == "score" and not backend.capabilities.scoring:
            raise StudioError(
                f"Model {backend.card.id} cannot score actions (its backend has no scoring): use action mode generate."
            )
        self.session = PrefixSession()
        self.env: StudioEnv | None = None
        self.example = ""
        self.fixed_actions: list[str] | None = None
        self.action_help: str | None = None
        self.history_start = 0
        self.episode_seed = 0
        self.step_sampling = self.config.sampling
        #: Sees each token of the outputs being written, as it comes: ``(row, token)``. Set by
        #: whoever shows the step live (the studio session); None when nobody watches.
        self.token_listener: TokenListener | None = None
        self._act_started = time.perf_counter()
        self._first_token_s: float | None = None

    @property
    def needs_frames(self) -> bool:
        """Image-text models see the environment's frame with each observation."""
        return self.backend.capabilities.images

    @property
    def model_description(self) -> dict[str, Any]:
        """Recorded on every episode this policy runs."""
        info = self.backend.info
        described = {key: info.get(key) for key in ("id", "source", "architecture", "parameters", "device", "dtype")}
        # A served model: which engine and which of its models (absent for in-process models).
        described.update({key: info[key] for key in ("engine", "engine_version", "served_model") if info.get(key)})
        return described

    def describe(self) -> dict[str, Any]:
        sampling = self.config.sampling
        return {
            "action_mode": self.config.action_mode,
            "candidates": self.config.candidates,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens,
            "few_shot": self.config.few_shot,
            "model": self.backend.info.get("id"),
            **({"steering": steering.record()} if (steering := steering_of(self.backend)) else {}),
        }

    # -- episode setup -------------------------------------------------------------------------
    def reset(self, env: StudioEnv, seed: int | None) -> None:
        self.env = env
        self.episode_seed = seed or 0
        self.session.reset()
        self.history_start = 0
        self.fixed_actions = self._fixed_actions(env)
        self.action_help = env.action_help()
        self.example = self._example(env, seed) if self.config.few_shot else ""

    # -- acting --------------------------------------------------------------------------------------
    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        base_seed = self.config.sampling.seed
        # A fixed seed must not give every step the same random draws: derive one per step.
        step_seed = (
            None
            if base_seed is None
            else (base_seed * 1_000_003 + self.episode_seed * 10_007 + observation.step_index) % 2**63
        )
        self.step_sampling = replace(self.config.sampling, seed=step_seed)
        self._act_started = time.perf_counter()
        messages = self._fit(episode, observation)
        images = [observation.frame] if self.backend.capabilities.images and observation.frame is not None else None
        bins = getattr(self.env, "discretiser", None)
        recorder = DecisionRecorder() if self.config.record_activations else None
        with stopping(should_stop), recording(recorder):  # every model call gives up waiting for the device on Stop
            # Score mode ranks a finite set: the valid actions, else the ones the environment offers for
            # scoring where its actions are calls (a web page: a click on each interactive element).
            choices = observation.valid_actions
            if self.config.action_mode == "score" and not choices and self.env is not None:
                choices = self.env.score_choices()
            if self.config.action_mode == "score" and choices:
                decision = self._act_by_scoring(
                    messages, replace(observation, valid_actions=choices), images, should_stop
                )
            elif self.config.action_mode == "score" and bins is not None and self.backend.capabilities.scoring:
                decision = self._act_by_bins(messages, images, should_stop, bins)
            else:
                decision = self._act_by_generating(messages, images, should_stop)
                if self.config.action_mode == "score":
                    decision.extra["action_mode"] = "generate (no finite action set)"
        decision.prompt = messages
        decision.extra["history_start"] = self.history_start
        if (steering := steering_of(self.backend)) is not None:
            decision.extra["steering"] = steering.record()  # the trace, reports and exports show it
        if recorder is not None and recorder.layers is not None:
            keep_decision_point(self.backend, episode.id, observation.step_index, recorder.layers, steering)
            decision.extra["activations"] = "recorded"
        if step_seed is not None:
            decision.extra["sampling_seed"] = step_seed  # enough to reproduce this step's samples
        if self.fixed_actions is None and observation.valid_actions is not None:
            decision.extra["valid_actions"] = list(observation.valid_actions)  # so history re-renders identically
        return decision

    def _generate(
        self, messages, images, should_stop, stop, assistant_prefix=""
    ) -> tuple[GenerateResult, list[TokenInfo]]:
        """Sample the turn after ``assistant_prefix``; also the prefix's own tokens, with the
        model's logprobs (the policy wrote them: marked ``forced``)."""
        forced, prompt_cache = (
            self._written(messages, images, assistant_prefix, "", "forced") if assistant_prefix else ([], None)
        )
        # The forced prefix is the first thing a live view shows: the model's time to it.
        self._first_token_s = time.perf_counter() - self._act_started if forced else None
        result = self.backend.generate(
            messages,
            n=self.config.candidates,
            sampling=self.step_sampling,
            stop=stop,
            images=images,
            session=self.session,
            should_stop=should_stop,
            assistant_prefix=assistant_prefix,
            on_token=self.token_listener,
        )
        if prompt_cache is not None:  # the prompt was encoded by the prefix's scoring pass: its reuse is the step's
            result.cache = prompt_cache
        return result, forced

    def _tell(self, row: int, token: TokenInfo) -> None:
        if self.token_listener is not None:
            self.token_listener(row, token)

    def _written(
        self, messages, images, text: str, before: str, origin: str, shown: bool = True
    ) -> tuple[list[TokenInfo], CacheStats | None]:
        """The tokens of ``text``, which the policy writes into the turn after ``before``, with
        the model's log-probabilities of them there (one scoring pass over the cached prompt),
        and how much of the prompt that pass found cached. ``shown``: they go to the live view
        as the first output's next tokens. A backend that cannot score writes no token records."""
        if not self.backend.capabilities.token_level:
            return [], None
        result = self.backend.score(messages, [text], images=images, session=self.session, assistant_prefix=before)
        tokens = _token_records(result, 0, text, origin)
        for token in tokens if shown else []:
            self._tell(0, token)
        return tokens, result.cache

    def _kept(self, tokens: list[TokenInfo]) -> list[TokenInfo] | None:
        """An output's token records, or None from a backend without logprobs or scoring (the
        records would not spell the output, or would carry no numbers)."""
        return tokens if self.backend.capabilities.token_level else None

    def _stats(self, result: GenerateResult) -> tuple[dict[str, float], dict[str, Any]]:
        timing = {f"generate_{k}": v for k, v in result.timing.items()}
        first = self._first_token_s if self._first_token_s is not None else result.timing.get("first_token_s")
        if first is not None:
            timing["first_token_s"] = first  # from the start of the step to its first token
        extra = {"cache": result.cache.to_dict(), "finish_reasons": [g.finish_reason for g in result.generations]}
        if result.served_by is not None:  # which of a served model's replicas answered
            extra["served_by"] = result.served_by
        return timing, extra

    @staticmethod
    def _interrupted(result: GenerateResult) -> Decision | None:
        """A Stop mid-generation: the cut-off text is not an output of the model, so no decision."""
        if any(g.finish_reason == "interrupted" for g in result.generations):
            return Decision(
                action=None,
                raw=THOUGHT + result.generations[0].text,
                interrupted=True,
                parse_error="Stopped before the output was finished.",
            )
        return None

    def _act_by_generating(self, messages, images, should_stop) -> Decision:
        # The turn starts with "Thought:" already written: small models then keep the format.
        result, forced = self._generate(messages, images, should_stop, GENERATE_STOP, assistant_prefix=THOUGHT)
        if (stopped := self._interrupted(result)) is not None:
            return stopped
        texts = [THOUGHT + g.text for g in result.generations]
        tokens = [forced + g.tokens for g in result.generations]
        parsed = [parse_react(text) for text in texts]
        nudged = all(p.action is None for p in parsed) and not should_stop()
        if nudged:  # nobody wrote "Action:": ask the first sample for its action line
            texts[0], tokens[0] = self._nudge(messages, images, texts[0], tokens[0])
            result.generations[0] = Generation(
                text=texts[0][len(THOUGHT) :], tokens=tokens[0][len(forced) :], finish_reason="nudged"
            )
            parsed[0] = parse_react(texts[0])
        checks = [
            self.env.validate_action(p.action) if p.action is not None and self.env is not None else None
            for p in parsed
        ]
        chosen = next((i for i, c in enumerate(checks) if c is not None and c.valid), 0)
        candidates = [
            Candidate(
                raw=text,
                thought=p.thought,
                action=(c.action if c and c.valid else p.action),
                valid=bool(c and c.valid),
                invalid_reason=p.error or (c.reason if c else None),
                tokens=self._kept(t),
            )
            for i, (t, text, p, c) in enumerate(zip(tokens, texts, parsed, checks))
            if i != chosen
        ]
        best_parse = parsed[chosen]
        timing, extra = self._stats(result)
        extra.update(action_mode="generate", chosen_candidate=chosen, action_nudged=nudged)
        return Decision(
            action=best_parse.action,
            raw=texts[chosen],
            thought=best_parse.thought,
            parse_error=best_parse.error,
            tokens=self._kept(tokens[chosen]),
            candidates=candidates,
            timing=timing,
            extra=extra,
        )

    def _nudge(self, messages, images, text: str, tokens: list[TokenInfo]) -> tuple[str, list[TokenInfo]]:
        """Continue ``text`` after an explicit "Action:" (one short greedy line).

        The output is then the sample, the inserted ``Action:`` and the model's line: its
        tokens are all three, in order (the inserted ones marked), so they spell the text.
        """
        marker = _action_marker(text)
        inserted, _cache = self._written(messages, images, marker, text, "inserted")
        sampling = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=32)
        listener = (lambda _row, token: self._tell(0, token)) if self.token_listener is not None else None
        follow = self.backend.generate(
            messages,
            sampling=sampling,
            stop=["\n"],
            images=images,
            session=self.session,
            assistant_prefix=text + marker,
            on_token=listener,
        )
        line = follow.generations[0]
        return text + marker + line.text, tokens + inserted + line.tokens

    def _act_by_scoring(self, messages, observation: Observation, images, should_stop) -> Decision:
        valid_actions = list(observation.valid_actions or [])
        result, forced = self._generate(messages, images, should_stop, ["Action:", *STOP], assistant_prefix=THOUGHT)
        if (stopped := self._interrupted(result)) is not None:
            return stopped
        timing, extra = self._stats(result)
        scored = [self._score_actions(messages, g, valid_actions, images) for g in result.generations]
        timing["score_s"] = sum(s.seconds for s in scored)
        best, first = result.generations[0], scored[0]
        action = first.best
        probabilities = [math.exp(v) for v in first.logprobs.values()]
        extra.update(
            action_mode="score",
            action_entropy=-sum(p * math.log(p) for p in probabilities if p > 0),
            chosen_action_probability=math.exp(first.logprobs[action]),
            action_scores_raw=first.totals,
        )
        candidates = [
            Candidate(
                raw=s.text(s.best), thought=g.text.strip(), action=s.best, tokens=forced + g.tokens + s.tokens(s.best)
            )
            for g, s in zip(result.generations[1:], scored[1:])
        ]
        return Decision(
            action=action,
            raw=first.text(action),
            thought=best.text.strip() or None,
            tokens=forced + best.tokens + first.tokens(action),
            action_logprobs=first.logprobs,
            candidates=candidates,
            timing=timing,
            extra=extra,
        )

    def _act_by_bins(self, messages, images, should_stop, bins: Any) -> Decision:
        """A continuous action, bin by bin: after the thought and ``Action:``, every bin of the first
        dimension is scored (one pass), one is taken (the likeliest; sampled at temperature > 0),
        then every bin of the next dimension after it, and so on. Each dimension's distribution over
        its bins, conditioned on the bins taken before it, is kept in ``extra["action_bins"]``."""
        result, forced = self._generate(messages, images, should_stop, ["Action:", *STOP], assistant_prefix=THOUGHT)
        if (stopped := self._interrupted(result)) is not None:
            return stopped
        timing, extra = self._stats(result)
        started = time.perf_counter()
        thought = result.generations[0]
        written, inserted = self._asked_for_action(messages, images, thought)
        tokens = forced + thought.tokens + inserted
        temperature = self.step_sampling.temperature
        rng = np.random.default_rng(self.step_sampling.seed)
        chosen: list[int] = []
        distributions: list[list[float]] = []
        continuations = [f" {b:0{bins.digits}d}" for b in range(bins.bins)]  # every dimension's bins
        for _dimension in range(bins.dimensions):
            scored = self.backend.score(
                messages, continuations, images=images, session=self.session, assistant_prefix=written
            )
            totals = np.asarray(scored.totals, dtype=np.float64)
            probabilities = np.exp(totals - totals.max())
            probabilities /= probabilities.sum()
            if temperature > 0:
                tempered = np.exp((totals - totals.max()) / temperature)
                pick = int(rng.choice(bins.bins, p=tempered / tempered.sum()))
            else:
                pick = int(np.argmax(totals))
            chosen.append(pick)
            distributions.append([round(float(p), 6) for p in probabilities])
            written += continuations[pick]
            tokens += _token_records(scored, pick, continuations[pick], "scored")
        timing["score_s"] = time.perf_counter() - started
        entropies = [-sum(p * math.log(p) for p in d if p > 0) for d in distributions]
        action = bins.format(chosen)
        extra.update(
            action_mode="score (bins)",
            action_entropy=sum(entropies) / len(entropies),
            chosen_action_probability=math.prod(d[c] for d, c in zip(distributions, chosen)),
            action_bins={
                "bins": bins.bins,
                "low": list(bins.low),
                "high": list(bins.high),
                "names": getattr(self.env, "action_dimension_names", None),
                "chosen": chosen,
                "probabilities": distributions,
                "entropies": entropies,
            },
        )
        return Decision(
            action=action,
            raw=written,
            thought=thought.text.strip() or None,
            tokens=tokens,
            timing=timing,
            extra=extra,
        )

    def _asked_for_action(self, messages, images, generation: Generation) -> tuple[str, list[TokenInfo]]:
        """The turn up to the action (``Thought:``, the thought and the inserted ``Action:``) and the
        inserted marker's token records, scored over the cached prompt."""
        before = THOUGHT + generation.text
        marker = _action_marker(before)
        inserted, _cache = self._written(messages, images, marker, before, "inserted", shown=False)
        return before + marker, inserted

    def _score_actions(self, messages, generation: Generation, valid_actions: list[str], images) -> ActionScores:
        """Every valid action scored after this thought and the inserted ``Action:`` (one pass)."""
        started = time.perf_counter()
        prefix, inserted = self._asked_for_action(messages, images, generation)
        continuations = [f" {a}" for a in valid_actions]
        result = self.backend.score(
            messages,
            continuations,
            images=images,
            session=self.session,
            assistant_prefix=prefix,
            end_with_eos=True,
        )
        totals = dict(zip(valid_actions, result.totals))
        top = max(totals.values())
        log_norm = top + math.log(sum(math.exp(v - top) for v in totals.values()))
        # The end-of-turn token closes each action in the score, but is not part of the text.
        action_tokens = {
            a: _token_records(result, i, c, "scored", drop_last=True)
            for i, (a, c) in enumerate(zip(valid_actions, continuations))
        }
        return ActionScores(
            prefix=prefix,
            prefix_tokens=inserted,
            logprobs={a: v - log_norm for a, v in totals.items()},
            totals=totals,
            action_tokens=action_tokens,
            seconds=time.perf_counter() - started,
        )


@dataclass
class ActionScores:
    """The valid actions scored after one thought."""

    prefix: str
    """The turn up to the action: ``Thought:``, the thought and the inserted ``Action:``."""
    prefix_tokens: list[TokenInfo]
    """The inserted ``Action:``'s tokens."""
    logprobs: dict[str, float]
    """Each action's log-probability, normalised over the valid actions."""
    totals: dict[str, float]
    """Each action's sequence log-probability (its tokens and the end of the turn)."""
    action_tokens: dict[str, list[TokenInfo]]
    seconds: float

    @property
    def best(self) -> str:
        return max(self.logprobs, key=self.logprobs.__getitem__)

    def text(self, action: str) -> str:
        """The assistant turn with ``action`` taken, as stored and as the next prompts show it."""
        return f"{self.prefix} {action}"

    def tokens(self, action: str) -> list[TokenInfo]:
        """The tokens after the thought: the inserted ``Action:``, then the action's."""
        return self.prefix_tokens + self.action_tokens[action]


def _action_marker(text: str) -> str:
    """What the policy inserts after ``text`` to ask for the action."""
    return "Action:" if text.endswith("\n") else "\nAction:"


def _token_records(result: Any, row: int, text: str, origin: str, drop_last: bool = False) -> list[TokenInfo]:
    """Token records of scored continuation ``row`` (its ``text``), marked with ``origin``."""
    ids, logprobs = list(result.tokens[row]), list(result.token_logprobs[row])
    texts = list(result.texts[row]) if result.texts else []
    entropies = list(result.entropies[row]) if result.entropies else [None] * len(ids)
    tops = list(result.alternatives[row]) if result.alternatives else [None] * len(ids)
    if drop_last and len(ids) > 1 and "".join(texts[:-1]) == text:
        ids, logprobs, texts, entropies, tops = ids[:-1], logprobs[:-1], texts[:-1], entropies[:-1], tops[:-1]
    if "".join(texts) != text or len(texts) != len(
        ids
    ):  # a backend that cannot split the text: the first token carries it
        texts = [text] + [""] * (len(ids) - 1)
    return [
        TokenInfo(id=i, text=t, logprob=lp, entropy=h, origin=origin, top=top)
        for i, t, lp, h, top in zip(ids, texts, logprobs, entropies, tops)
    ]
