"""One user's studio: models A and B, the episode being stepped or viewed, and its settings.

The browser keeps one :class:`StudioSession` per tab (in ``gr.State``); the named API keeps
one per client. Nothing here is shared between sessions except what the composition root
hands in: the process's model registry and the sinks (the store). The UI layer stays thin:
every action is a method here, and everything it shows is read from here.
"""

from __future__ import annotations

import json, threading  # noqa: E401
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from studio.agents.base import Policy
from studio.envs.registry import default_max_steps, make_env
from studio.episodes.live import LiveOutput, stream
from studio.episodes.human import clicked_action, typed_action
from studio.analysis.attention import policy_written
from studio.errors import StudioError
from studio.importers.registry import check_continuable
from studio.importers.transcript import has_transcript, prompt_at
from studio.models.access import ModelAccess, check_model_name
from studio.models.base import Backend, ProgressCallback, no_progress
from studio.episodes.runner import EpisodeRunner, RunnerConfig, Sink
from studio.settings import EpisodeSettings
from studio.trace import Episode, Step, new_id
from studio.validation import real_number, whole_number
from studio.viz.screen import before_after, is_screen_step
from studio.viz.video import FrameCache

if TYPE_CHECKING:
    from studio.scaling.values import StepValue

SLOTS = ("A", "B")
#: Who acts in the rollouts that estimate step values.
ROLLOUT_POLICIES = ("expert", "random", "model A", "model B")
#: Rollouts of a model that run side by side in the Values view (one batch per token).
VALUE_ROLLOUTS_AT_ONCE = 8
POLICIES = {
    "react-a": "ReAct with model A",
    "react-b": "ReAct with model B",
    "expert": "Expert (the environment's planner)",
    "random": "Random valid actions",
    "human": "Human (you pick or type each action)",
}


class StudioSession:
    """A user's models, episode and settings, with every action the panels offer."""

    def __init__(
        self,
        registry: Any,
        sinks: list[Sink] | None = None,
        model_a: Backend | None = None,
        settings: EpisodeSettings | None = None,
        access: ModelAccess | None = None,
    ) -> None:
        self.id = new_id()
        self.registry = registry
        #: The operator's rules for the model names this (web) user sends.
        self.access = access or ModelAccess()
        self.sinks = list(sinks or [])
        self.models: dict[str, Backend | None] = {"A": model_a, "B": None}
        self.settings = settings or EpisodeSettings()
        self.runner: EpisodeRunner | None = None
        self.viewing: Episode | None = None
        """An episode opened from the store: shown read-only until it is forked."""
        self.overlay: Episode | None = None
        """Another episode drawn over this one in the plots (e.g. model B on the same seed)."""
        # Computed maps, not view state: the same question is not asked of the model twice.
        self._attention: dict[tuple[Any, ...], Any] = {}
        self._policy_key: tuple[Any, ...] | None = None
        self._fork_modes: dict[tuple[str, str], tuple[str, str]] = {}  # per environment and options shown
        self._frames = FrameCache()  # steps' frames as the views draw them
        self._lock = threading.RLock()
        self._values_stop = threading.Event()
        """Set by :meth:`stop_values`: the running value estimate ends, keeping nothing."""

    def __deepcopy__(self, memo: dict[int, Any]) -> StudioSession:
        # Gradio deep-copies the value a State factory returns; the factory already made a fresh
        # session for this user, and its locks, runner and models must stay the same objects.
        return self

    # -- models ---------------------------------------------------------------------------------
    def load_model(
        self, slot: str, name: str, device: str = "auto", dtype: str = "auto", progress: ProgressCallback = no_progress
    ) -> dict[str, Any]:
        """Load ``name`` into slot A or B (shared with other sessions that load the same model).

        The name comes from a user of the web app: the session's :class:`ModelAccess` (the
        operator's command line) decides which folders may load and whether remote code may run.
        """
        slot = _slot(slot)
        name = check_model_name(name or "")
        if not name:
            raise StudioError("Give a model: default, a hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or a local folder.")
        backend = self.registry.load(
            name,
            device=str(device or "auto"),
            dtype=str(dtype or "auto"),
            progress=progress,
            holder=self.id,
            access=self.access,
        )
        previous, self.models[slot] = self.models[slot], backend
        if previous is not None and previous is not backend and previous not in self.models.values():
            self.registry.release(previous, self.id)
        self._policy_key = None  # the next step uses the new model
        return backend.info

    def unload_model(self, slot: str) -> None:
        """Empty a slot; the model is freed when no other session uses it."""
        slot = _slot(slot)
        backend, self.models[slot] = self.models[slot], None
        if backend is not None and backend not in self.models.values():
            self.registry.release(backend, self.id)
        self._policy_key = None

    def close(self, wait: float | None = None) -> None:
        """The browser tab is gone (or the server stops): stop what runs, mark its unfinished episode
        abandoned, give the models back. ``wait``: at most this many seconds for a running step to end
        (at shutdown); None waits for it."""
        self.stop()
        self.stop_values()
        held = self._lock.acquire(timeout=-1 if wait is None else wait)
        try:
            if self.runner is not None:
                try:
                    self.runner.abandon()
                except StudioError:
                    pass  # the store refused the end note: the episode stays as it was stored
        finally:
            if held:
                self._lock.release()
        for slot in SLOTS:
            self.unload_model(slot)
        self._frames.close()

    def model_info(self, slot: str) -> dict[str, Any] | None:
        backend = self.models[_slot(slot)]
        return None if backend is None else backend.info

    # -- policies -------------------------------------------------------------------------------
    def make_policy(self, settings: EpisodeSettings) -> Policy:
        from studio.policies import policy_from_settings

        if settings.policy not in POLICIES:
            raise StudioError(f"Unknown policy {settings.policy!r}: use one of {', '.join(POLICIES)}.")
        if not settings.policy.startswith("react"):
            return policy_from_settings(settings, scripted=settings.policy)
        slot = settings.policy[-1].upper()
        backend = self.models[slot]
        if backend is None:
            raise StudioError(f"Model {slot} is not loaded: load one in the Models tab, or pick another policy.")
        judge = None
        if settings.verifier == "judge":
            judge = self.models["B"]
            if judge is None:
                raise StudioError("The judge verifier asks model B: load one in slot B of the Models tab.")
        return policy_from_settings(settings, backend, judge=judge)

    def _policy_identity(self, settings: EpisodeSettings) -> tuple[Any, ...]:
        """What makes two policies the same: their settings and the models in the slots."""
        return (*settings.policy_fields(), id(self.models["A"]), id(self.models["B"]))

    def update(self, settings: EpisodeSettings) -> None:
        """New settings; a changed policy or sampling setting applies from the next step (takeover)."""
        with self._lock:
            self.settings = settings
            if self.runner is not None and self.runner.has_episode and self.viewing is None:
                key = self._policy_identity(settings)
                if key != self._policy_key:
                    self.runner.set_policy(self.make_policy(settings))
                    self._policy_key = key

    # -- the episode ----------------------------------------------------------------------------
    @property
    def episode(self) -> Episode | None:
        """What the panels show: the episode opened read-only, else the one being stepped."""
        if self.viewing is not None:
            return self.viewing
        return self.runner.episode if self.runner is not None and self.runner.has_episode else None

    def fork_mode(self) -> tuple[str, str]:
        """How a fork of the shown episode comes back (its environment's ``fork_mode`` and note); an
        environment that cannot even be made here says so as ``none``."""
        episode = self.episode
        if episode is None:
            return "exact", ""
        runner = self.runner
        if runner is not None and runner.env_name == episode.env and runner.env.options == episode.env_options:
            return runner.env.fork_mode, runner.env.fork_note
        key = (episode.env, json.dumps(episode.env_options, sort_keys=True, default=str))
        if key not in self._fork_modes:
            try:
                env = make_env(episode.env, episode.env_options)
                try:
                    self._fork_modes[key] = (env.fork_mode, env.fork_note)
                finally:
                    env.close()
            except StudioError as exc:
                self._fork_modes[key] = ("none", str(exc).rstrip("."))
        return self._fork_modes[key]

    def stepped_episode(self) -> Episode:
        """The shown episode when it has steps (what pair makers and values work on); else one line."""
        episode = self.episode
        if episode is None or not episode.steps:
            raise StudioError("Take a step first.")
        return episode

    @property
    def read_only(self) -> bool:
        return self.viewing is not None

    def step_at(self, at: Any) -> Step | None:
        """The shown episode's step ``at`` (a widget's or a client's value), or None if it names none."""
        episode = self.episode
        try:
            index = whole_number(at, "The selected step", 0)
        except StudioError:
            return None
        return episode.steps[index] if episode is not None and index < episode.length else None

    @property
    def values_stop(self) -> threading.Event:
        """The flag that ends the running value estimate (:meth:`stop_values` sets it; a job queue may too)."""
        return self._values_stop

    def value_steps(self, step_index: Any, rollouts: Any = 4, horizon: Any = None) -> int:
        """The most environment steps :meth:`estimate_values` could take with these settings: each output
        of the step, rolled out ``rollouts`` times to the horizon or the episode's step limit (checked
        arguments: one line when one is wrong)."""
        step = self.step_at(step_index)
        episode = self.episode
        if episode is None or step is None:
            raise StudioError("Select a step first.")
        count = whole_number(rollouts, "Rollouts", 1, 64)
        steps = whole_number(horizon if horizon not in (None, "") else 0, "The horizon", 0, 10_000)
        limit = episode.max_steps or default_max_steps(episode.env)
        return len(step.outputs()) * count * (steps or max(limit - step.index, 1))

    def estimate_values(
        self,
        step_index: Any,
        rollout_policy: str = "expert",
        rollouts: Any = 4,
        horizon: Any = None,
        progress: Callable[[int, int], None] | None = None,
        discount: Any = 1.0,
    ) -> list[StepValue]:
        """Monte Carlo Q of each output of the shown episode's step (:func:`studio.scaling.values.estimate_step_values`).

        ``rollout_policy``: one of :data:`ROLLOUT_POLICIES` (a model slot's ReAct policy samples at
        temperature 1, rollout i seeded i). ``horizon`` 0 or None: to the episode's end."""
        from studio.scaling.values import estimate_step_values, rollout_policy_factory

        episode = self.episode
        index = whole_number(step_index, "The selected step", 0)
        if episode is None or index >= episode.length:
            raise StudioError("Select a step first.")
        count = whole_number(rollouts, "Rollouts", 1, 64)
        steps = whole_number(horizon if horizon not in (None, "") else 0, "The horizon", 0, 10_000) or None
        if rollout_policy not in ROLLOUT_POLICIES:
            raise StudioError(
                f"Unknown rollout policy {str(rollout_policy)[:40]!r}: use one of {', '.join(ROLLOUT_POLICIES)}."
            )
        backend = None
        if rollout_policy in ("expert", "random"):
            factory, name = rollout_policy_factory(rollout_policy), rollout_policy
        else:
            backend = self.models[rollout_policy[-1]]
            if backend is None:
                raise StudioError(f"{rollout_policy.capitalize()} is not loaded.")
            factory, name = rollout_policy_factory("model"), f"react:{backend.card.id}"
        gamma = real_number(discount, "The discount", 0.0, 1.0)
        self._values_stop.clear()
        return estimate_step_values(
            episode,
            index,
            factory,
            rollout_policy=name,
            rollouts=count,
            horizon=steps,
            discount=gamma,
            progress=progress,
            should_stop=self._values_stop.is_set,
            model=backend,
            parallel=VALUE_ROLLOUTS_AT_ONCE if backend is not None else 1,  # a model's rollouts decode in lockstep
        )

    def current_frame(self) -> Any:
        """The shown episode's state now: the live environment's frame, else the one after its last action."""
        if self.viewing is None and self.runner is not None and self.runner.has_episode:
            return self.runner.env.render()
        final = self._drawn("final")  # redrawn from the last snapshot; an imported episode has none: its last frame
        return final if final is not None or self.episode is None else self._drawn(self.episode.length - 1, False)

    def step_frame(self, at: Any) -> Any:
        """The frame the shown episode's step ``at`` acted on: the one it kept, else redrawn from its
        snapshot (cached), with its action drawn on it; on a screen (a web page), beside the page after
        it. None when it names no step or cannot be drawn here."""
        step = self.step_at(at)
        if step is None:
            return None
        before = self._drawn(step.index)
        if before is None or not is_screen_step(step):
            return before
        last = step.index == self.episode.length - 1  # type: ignore[union-attr]
        after = self.current_frame() if last else self._drawn(step.index + 1, marked=False)
        return before_after(before, after)

    def _drawn(self, which: int | str, marked: bool = True) -> Any:
        episode = self.episode
        return None if episode is None or not episode.steps else self._frames.get(episode, which, marked)

    def current_observation(self) -> str:
        if self.viewing is None and self.runner is not None and self.runner.has_episode:
            return self.runner.observation
        episode = self.episode
        return episode.steps[-1].next_observation if episode is not None and episode.steps else ""

    def valid_actions(self) -> list[str] | None:
        if (
            self.viewing is None
            and self.runner is not None
            and self.runner.has_episode
            and not self.runner.episode.done
        ):
            return self.runner.env.valid_actions()
        return None

    def reset(self, settings: EpisodeSettings | None = None) -> Episode:
        """A new episode with ``settings`` (or the current ones)."""
        with self._lock:
            settings = settings or self.settings
            probe = make_env(
                settings.env, settings.env_options
            )  # a bad environment or option fails here, nothing changes
            policy = self.make_policy(settings)
            config = RunnerConfig(max_steps=settings.max_steps, record_frames=True)
            same_env = (
                self.runner is not None
                and self.runner.env_name == settings.env
                and self.runner.env.options == probe.options
            )
            if same_env and self.runner.config == config:
                self.runner.policy = policy
            else:
                self.runner = EpisodeRunner(settings.env, policy, settings.env_options, sinks=self.sinks, config=config)
            self.settings, self.viewing = settings, None
            self._policy_key = self._policy_identity(settings)
            return self.runner.reset(seed=settings.seed)

    def _live_runner(self) -> EpisodeRunner:
        if self.viewing is not None:
            raise StudioError("This episode is open read-only: fork it from a step to continue it.")
        if self.runner is None or not self.runner.has_episode:
            raise StudioError("No episode yet: press Reset.")
        return self.runner

    def step(self, action: str | None = None) -> Step:
        """One step: the policy decides, or ``action`` is what a person chose or typed (takeover;
        :func:`~studio.episodes.human.typed_action`)."""
        with self._lock:
            runner = self._live_runner()
            if action is not None and not action.strip():
                action = None
            if action is None and self.settings.policy == "human":
                raise StudioError("Human mode: pick one of the valid actions or type one, then press Take action.")
            return runner.step(action=None if action is None else typed_action(runner.env, action))

    def act_at(self, x: Any, y: Any, shown: str | None = None) -> Step:
        """A person clicked the frame at pixel (``x``, ``y``): the environment's action for that point
        (a click on the web element under it), taken as a person's step. ``shown`` is the observation
        the clicked frame went with: a frame of an earlier step is not the page as it is now."""
        with self._lock:
            runner = self._live_runner()
            if shown is not None and shown != runner.observation:
                raise StudioError("This frame shows an earlier step: pick the current state to act on the page.")
            return runner.step(action=clicked_action(runner.env, x, y))

    def run(self, max_steps: int | None = None) -> Iterator[Step]:
        """Steps until the end, ``max_steps`` steps, or :meth:`stop` (one at a time, as they come)."""
        with self._lock:
            runner = self._live_runner()
            if self.settings.policy == "human":
                raise StudioError("Human mode steps one action at a time: pick or type an action.")
            yield from runner.steps(max_steps)

    def step_live(self, action: str | None = None) -> Iterator[LiveOutput | Step]:
        """:meth:`step`, watched: the output as it is written (:class:`LiveOutput`), then the step."""
        return self._live(lambda: iter([self.step(action)]))

    def run_live(self, max_steps: int | None = None) -> Iterator[LiveOutput | Step]:
        """:meth:`run`, watched: each step's output as it is written, and each step as it is taken."""
        return self._live(lambda: self.run(max_steps))

    def _live(self, work: Callable[[], Iterator[Step]]) -> Iterator[LiveOutput | Step]:
        self._live_runner()  # a read-only or missing episode is refused before anything starts

        def attach(listener: Any) -> None:
            policy = self.runner.policy if self.runner is not None else None
            if hasattr(policy, "token_listener"):
                policy.token_listener = listener

        return stream(work, lambda: self.episode.length if self.episode is not None else 0, attach, self.stop)

    def stop_values(self) -> None:
        """End the running value estimate: running rollouts finish their step, none start, nothing is kept."""
        self._values_stop.set()

    def stop(self) -> None:
        """Interrupt a run, also in the middle of the model's generation (thread-safe)."""
        if self.runner is not None:
            self.runner.stop()

    def fork(self, at: int) -> Episode:
        """Continue the shown episode from step ``at`` (steps before it are kept)."""
        with self._lock:
            episode = self.episode
            if episode is None:
                raise StudioError("No episode to fork: reset or open one first.")
            check_continuable(episode)
            settings = replace(
                self.settings, env=episode.env, env_options=dict(episode.env_options), seed=episode.seed or 0
            )
            policy = self.make_policy(settings)
            if self.runner is None:
                self.runner = EpisodeRunner(
                    episode.env, policy, episode.env_options, sinks=self.sinks, config=RunnerConfig(record_frames=True)
                )
            else:
                self.runner.policy = policy
            forked = self.runner.fork(episode, int(at))
            self.settings, self.viewing = settings, None
            self._policy_key = self._policy_identity(settings)
            return forked

    def attention_ready(self, step_index: Any, output: str = "taken", slot: str = "A", rollout: bool = False) -> bool:
        """Whether :meth:`attention` would answer from its cache (no forward pass)."""
        episode, backend = self.episode, self.models.get(_slot(slot))
        if episode is None or backend is None or self.step_at(step_index) is None:
            return False
        return (episode.id, int(step_index), output, id(backend), rollout) in self._attention

    def attention(self, step_index: int, output: str = "taken", slot: str = "A", rollout: bool = False) -> Any:
        """What model ``slot`` attended to when producing an output of a step (computed once, then cached).

        ``output`` is ``taken`` or ``candidate N``. Model B on a step model A took reads the
        same prompt and output: the two models compared on the same step.
        """
        episode = self.episode
        if episode is None or not 0 <= int(step_index) < episode.length:
            raise StudioError("Select a step first.")
        step = episode.steps[int(step_index)]
        backend = self.models[_slot(slot)]
        if backend is None:
            raise StudioError(f"Model {_slot(slot)} is not loaded.")
        if not backend.capabilities.attention:
            raise StudioError(
                f"Model {_slot(slot)} ({backend.info.get('id')}) cannot show its attention: {backend.no_attention_reason}."
            )
        prompt = prompt_at(episode, step.index) if step.prompt or has_transcript(step) else None  # imported: rebuilt
        if not prompt:
            raise StudioError(
                f"Step {step.index} was taken by {step.actor or 'someone'} without a model prompt: nothing to look into."
            )
        chosen = step.output(output)  # "taken" or "candidate N"; anything else is one line
        text, tokens = chosen.raw, chosen.tokens
        key = (episode.id, step.index, output, id(backend), rollout)
        if key not in self._attention:
            images = [step.frame] if backend.capabilities.images and step.frame is not None else None
            self._attention[key] = backend.attention(
                prompt,
                text,
                images=images,
                instruction=episode.instruction,
                observation=step.observation,
                rollout=rollout,
                written=policy_written(text, tokens),
            )
            while len(self._attention) > 8:  # a few steps' worth; each map is layers × heads × tokens × prompt
                self._attention.pop(next(iter(self._attention)))
        return self._attention[key]

    def open(self, episode: Episode) -> None:
        """Show a stored episode read-only."""
        with self._lock:
            self.viewing = episode


def _slot(slot: str) -> str:
    value = str(slot or "").strip().upper()
    if value not in SLOTS:
        raise StudioError(f"Unknown model slot {slot!r}: use A or B.")
    return value
