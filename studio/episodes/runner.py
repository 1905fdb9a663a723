"""The episode runner: reset, step, run, stop and fork, with every step sent to sinks.

One runner drives one environment with one policy for one user (the UI keeps a runner per
browser session; nothing here is shared between sessions). Every step records the
environment snapshot taken before it, so :meth:`EpisodeRunner.fork` can branch any step
of any episode, including one read back from a file, without replaying it.

Sinks receive :class:`RunnerEvent` objects as things happen: ``started`` (a reset or a
fork; a fork's episode already holds the copied prefix), ``step`` and ``ended``. The UI
stream and the store are sinks; :class:`JsonlSink` writes finished episodes to a file.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol

from studio.agents.base import Decision, Observation, Policy
from studio.envs.base import StudioEnv, invalid_observation
from studio.envs.registry import default_max_steps, make_env
from studio.errors import EpisodeOver, Interrupted, NotStored, StudioError
from studio.trace import ABANDONED, Episode, Step, new_id, utc_now
from studio.validation import MAX_ACTION, MAX_SEED, check_text


@dataclass
class RunnerEvent:
    """Something that happened to an episode."""

    kind: Literal["started", "step", "ended"]
    episode: Episode
    step: Step | None = None


class Sink(Protocol):
    """Receives runner events (the UI stream, the store, a JSONL file)."""

    def handle(self, event: RunnerEvent) -> None: ...


class JsonlSink:
    """Appends each finished episode to a JSONL file, one episode per line (the trace format)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def handle(self, event: RunnerEvent) -> None:
        if event.kind == "ended":
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(event.episode.to_json() + "\n")


class ListSink:
    """Keeps every event in memory (handy for tests and notebooks)."""

    def __init__(self) -> None:
        self.events: list[RunnerEvent] = []

    def handle(self, event: RunnerEvent) -> None:
        self.events.append(event)


@dataclass
class RunnerConfig:
    """Limits and what to record."""

    max_steps: int | None = None
    """Steps before the episode is truncated; None uses the environment's default."""
    max_invalid_actions: int = 10
    """Invalid actions allowed in an episode before it is truncated."""
    record_frames: bool = True
    """Store the rendered frame on every step (PNG in the trace). Policies that look at
    images (``policy.needs_frames``) get frames either way."""


class EpisodeRunner:
    """Drives one environment with one policy, step by step."""

    def __init__(
        self,
        env: str | StudioEnv,
        policy: Policy,
        env_options: dict[str, Any] | None = None,
        sinks: list[Sink] | None = None,
        config: RunnerConfig | None = None,
    ) -> None:
        """``env`` is a registered name (made with ``env_options``) or an environment already made."""
        if isinstance(env, StudioEnv):
            if env_options:
                raise StudioError("Give the options to the environment when you make it, not to the runner.")
            self.env: StudioEnv = env
            self.env_name = env.name or type(env).__name__
        else:
            self.env = make_env(env, env_options)
            self.env_name = env
        self.policy = policy
        self.sinks: list[Sink] = list(sinks or [])
        self.config = config or RunnerConfig()
        self.max_steps = self.config.max_steps or default_max_steps(self.env)
        self._episode: Episode | None = None
        self._observation = ""
        self._stop = threading.Event()

    # -- state -----------------------------------------------------------------------------
    @property
    def episode(self) -> Episode:
        """The current episode; raises if nothing has been reset yet."""
        if self._episode is None:
            raise StudioError("No episode yet: reset first.")
        return self._episode

    @property
    def has_episode(self) -> bool:
        """Whether :meth:`reset` (or :meth:`fork`) has started an episode."""
        return self._episode is not None

    @property
    def observation(self) -> str:
        """The text observation the next step will be decided on."""
        return self._observation

    def current_observation(self) -> Observation:
        """What the policy will see at the next step (with a frame when recorded or when the policy looks at images)."""
        wants_frame = self.config.record_frames or getattr(self.policy, "needs_frames", False)
        frame = self.env.render() if wants_frame else None
        return Observation(
            text=self._observation,
            instruction=self.env.instruction,
            valid_actions=self.env.valid_actions(),
            step_index=self.episode.length,
            frame=frame,
        )

    def _emit(self, kind: Literal["started", "step", "ended"], step: Step | None = None) -> None:
        for sink in self.sinks:
            sink.handle(RunnerEvent(kind, self.episode, step))

    def set_policy(self, policy: Policy) -> None:
        """Hand the episode to another policy (e.g. a human takes over, then hands back)."""
        policy.reset(self.env, self.episode.seed if self._episode else None)
        self.policy = policy

    # -- reset / step / run -----------------------------------------------------------------
    def reset(self, seed: int | None = 0) -> Episode:
        """Start a new episode on ``seed`` (the same seed gives the same task)."""
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
            raise StudioError(f"The seed must be a whole number from 0 to {MAX_SEED}, got {str(seed)[:40]}.")
        self._observation, _info = self.env.reset(seed=seed)
        self.policy.reset(self.env, seed)
        self.abandon(f"{ABANDONED}: a new episode was reset")
        self.max_steps = self.config.max_steps or default_max_steps(self.env)  # a fork may have taken its parent's
        self._episode = Episode(
            env=self.env_name,
            seed=seed,
            env_options=dict(self.env.options),
            instruction=self.env.instruction,
            policy=self.policy.name,
            policy_config=self.policy.describe(),
            model=getattr(self.policy, "model_description", None),
            max_steps=self.max_steps,
        )
        self._emit("started")
        return self._episode

    def step(self, action: str | None = None) -> Step:
        """Take one step. With ``action``, a person takes this step instead of the policy.

        Raises :class:`Interrupted` when :meth:`stop` cut the policy's output short (no step
        is recorded, the environment is not stepped) and :class:`NotStored` when a sink
        could not keep the step (the episode is stopped there, with a note saying so).
        """
        self._stop.clear()  # a Stop pressed while nothing ran must not cut this step
        return self._step(action)

    def _step(self, action: str | None = None) -> Step:
        episode = self.episode
        if episode.done:
            raise EpisodeOver("This episode is over: reset, or fork it from an earlier step.")
        if action is not None:
            action = check_text(action, "An action", MAX_ACTION)  # a person typed it: it is stored, shown, exported
        observation = self.current_observation()
        state = self.env.get_state()
        started = time.perf_counter()
        if action is not None:
            decision, actor = Decision(action=action, raw=action), "human"
        else:
            decision, actor = self.policy.act(episode, observation, should_stop=self._stop.is_set), self.policy.name
        if decision.interrupted:
            raise Interrupted("Stopped: the output being generated was dropped and the environment was not stepped.")
        policy_seconds = time.perf_counter() - started
        step = Step(
            index=episode.length,
            observation=observation.text,
            frame=observation.frame if self.config.record_frames else None,
            action=decision.action,
            actor=actor,
            prompt=decision.prompt,
            raw=decision.raw,
            thought=decision.thought,
            tokens=decision.tokens,
            action_logprobs=decision.action_logprobs,
            candidates=decision.candidates,
            extra=decision.extra,
            state=state,
            timing={**decision.timing, "policy_s": policy_seconds},
        )
        self._apply(step, decision)
        episode.steps.append(step)
        self._observation = step.next_observation
        failure = self._emit_step(step)
        if step.terminated or step.truncated:
            self._finish(step)
        if failure is not None:  # the step stands (it is stored); a secondary sink says what it could not do
            raise failure
        return step

    def _emit_step(self, step: Step) -> StudioError | None:
        """Send ``step`` to every sink. A sink that could not keep it (:class:`NotStored`, the store)
        stops the episode there; another sink's error is returned, once every sink has had the step."""
        failure = None
        for sink in self.sinks:
            try:
                sink.handle(RunnerEvent("step", self.episode, step))
            except NotStored as exc:
                self._stop_unstored(step, exc)
            except StudioError as exc:
                failure = failure or exc
        return failure

    def _stop_unstored(self, step: Step, error: StudioError) -> None:
        """A sink could not keep ``step``: end the episode before it, never step on past a gap.

        The step is taken back (the environment returns to the snapshot taken before it), so
        what the studio shows, the environment and the database all end at the same step.
        """
        episode = self.episode
        episode.steps.pop()
        if step.state is not None:
            self.env.set_state(copy.deepcopy(step.state))
        self._observation = step.observation
        note = f"stopped: step {step.index} could not be stored ({str(error).rstrip('.')})"
        episode.success, episode.end_reason, episode.ended_at = None, note, utc_now()  # no outcome: cut off
        for sink in self.sinks:  # the note reaches the database too, if it can be written again
            try:
                sink.handle(RunnerEvent("ended", episode))
            except StudioError:
                pass
        raise NotStored(f"The episode was stopped at step {step.index}: {error}") from None

    def _apply(self, step: Step, decision: Decision) -> None:
        """Send the action to the environment (or record why it could not be) and fill the outcome."""
        started = time.perf_counter()
        if decision.action is None:
            reason = decision.parse_error or "No action was given."
            step.valid, step.invalid_reason, step.next_observation = False, reason, invalid_observation(reason)
        else:
            check = self.env.validate_action(decision.action)
            next_observation, reward, terminated, truncated, info = self.env.step(decision.action)
            step.action = check.action or decision.action
            step.valid, step.invalid_reason = check.valid, check.reason
            step.next_observation, step.reward = next_observation, reward
            step.terminated, step.truncated = terminated, truncated
            step.info = _json_safe(info)
        step.timing["env_s"] = time.perf_counter() - started
        invalid_count = sum(not s.valid for s in self.episode.steps) + (not step.valid)
        if not (step.terminated or step.truncated):
            if invalid_count >= self.config.max_invalid_actions:
                step.truncated, step.info["end_reason"] = True, "too many invalid actions"
            elif step.index + 1 >= self.max_steps:
                step.truncated, step.info["end_reason"] = True, "step limit"
                if self.env.success_when_truncated:  # a survival task: lasting this long was the goal
                    step.info.update(success=True, success_rule=self.env.success_rule)

    def _finish(self, last: Step) -> None:
        episode = self.episode
        survived = last.truncated and self.env.success_when_truncated and last.valid
        if not self.env.has_success:  # no notion of success (Pendulum): the return says how it went
            episode.success = None
            last.info.setdefault("success_rule", self.env.success_rule)
        else:
            episode.success = bool((last.terminated or survived) and last.info.get("success", False))
        if "end_reason" in last.info:
            episode.end_reason = last.info["end_reason"]
        elif last.terminated:
            episode.end_reason = "goal reached" if episode.success else "terminated"
        else:
            episode.end_reason = "truncated by the environment"
        if survived and episode.success:
            limit = "step limit" if episode.end_reason == "step limit" else "environment's time limit"
            episode.end_reason = f"survived to the {limit}"
        episode.ended_at = utc_now()
        self._emit("ended")

    def run(self, max_steps: int | None = None) -> Episode:
        """Step until the episode ends, ``max_steps`` more steps were taken, or :meth:`stop` is called."""
        for _ in self.steps(max_steps):
            pass
        return self.episode

    def steps(self, max_steps: int | None = None) -> Iterator[Step]:
        """:meth:`run`, one step at a time (a UI shows each step as it comes)."""
        self._stop.clear()
        taken = 0
        while not self.episode.done and (max_steps is None or taken < max_steps) and not self._stop.is_set():
            yield self._step()
            taken += 1

    def abandon(self, reason: str = f"{ABANDONED}: the session ended") -> None:
        """End the current episode where it stands, if it is still running (the user left it):
        stored episodes are never left "running" forever."""
        episode = self._episode
        if episode is None or episode.done:
            return
        episode.end_reason, episode.ended_at = reason, utc_now()
        self._emit("ended")

    def stop(self) -> None:
        """Ask a running :meth:`run` to stop after the current step (thread-safe)."""
        self._stop.set()

    # -- fork ----------------------------------------------------------------------------------
    def fork(self, episode: Episode, at: int, share_history: bool = False) -> Episode:
        """Branch ``episode`` at step ``at``: keep steps ``0..at-1``, restore the state step ``at`` saw
        (exactly, or by replaying the actions from the seed: the environment's ``fork_mode``; one that
        cannot be forked is refused in one line). The fork keeps its parent's step limit unless this
        runner's config sets one.

        The new episode becomes the current one; its next step is a new step ``at``.
        ``share_history``: the kept steps are the parent's own objects, not copies (for rollouts
        that are never stored and only read the history: copying it was most of a rollout's time).
        """
        if not 0 <= at < episode.length:
            raise StudioError(f"Cannot fork at step {at}: the episode has steps 0 to {episode.length - 1}.")
        state = episode.steps[at].state
        if state is None:
            raise StudioError(f"Step {at} has no environment snapshot to fork from.")
        if episode.env != self.env_name or episode.env_options != self.env.options:
            self.env = make_env(episode.env, episode.env_options)
            self.env_name = episode.env
        # A fork goes on under its parent's step limit (unless this runner was given one).
        self.max_steps = self.config.max_steps or episode.max_steps or default_max_steps(self.env)
        if self.env.fork_mode == "none":
            raise StudioError(f"{episode.env} cannot be forked here: {self.env.fork_note}.")
        self.env.rewind(episode.seed, state)  # the episode may come from a file: checked, one line if it does not fit
        self._observation = episode.steps[at].observation
        self.policy.reset(self.env, episode.seed)
        self.abandon(f"{ABANDONED}: forked into a new episode")
        self._episode = Episode(
            env=episode.env,
            seed=episode.seed,
            env_options=dict(episode.env_options),
            instruction=episode.instruction,
            policy=self.policy.name,
            policy_config=self.policy.describe(),
            model=getattr(self.policy, "model_description", None),
            steps=list(episode.steps[:at]) if share_history else [_copy_step(s) for s in episode.steps[:at]],
            parent_id=episode.id,
            forked_at=at,
            max_steps=self.max_steps,
        )
        self._emit("started")
        return self._episode


def _copy_step(step: Step) -> Step:
    """A fork's copy of a parent step: the same content, but its candidates are new records."""
    copied = copy.deepcopy(step)
    for candidate in copied.candidates:
        candidate.id = new_id()
    return copied


def _json_safe(info: dict[str, Any]) -> dict[str, Any]:
    """Keep what standard JSON can hold (no NaN: PostgreSQL refuses it), as text otherwise, so every
    trace can be written to every database."""
    safe = {}
    for key, value in info.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            value = repr(value)
        safe[str(key)] = value
    return safe
