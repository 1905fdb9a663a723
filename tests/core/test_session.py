"""The per-user session behind the panels and the API: no browser, a scripted model, a real store."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.errors import StudioError
from studio.models.access import ModelAccess
from studio.models.registry import ModelRegistry
from studio.models.scripted import ScriptedBackend
from studio.session import EpisodeSettings, StudioSession

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ["Thought: east.\nAction: go east", "Thought: north.\nAction: go north", "Thought: hm.\nAction: fly"]


@pytest.fixture()
def registry() -> ModelRegistry:
    return ModelRegistry()


def session_with_model(registry: ModelRegistry, sinks=None, **settings) -> StudioSession:
    model = registry.add("scripted-test", ScriptedBackend(OUTPUTS))
    return StudioSession(registry, sinks=sinks, model_a=model, settings=EpisodeSettings(**settings))


def test_reset_step_run_and_every_step_is_stored(registry: ModelRegistry, tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    session = session_with_model(registry, sinks=[store.episodes.sink()])
    episode = session.reset()
    assert (
        session.current_observation() and session.current_frame().shape[2] == 3 and "go east" in session.valid_actions()
    )
    assert store.episodes.count()["episodes"] == 0  # nothing stored until something happens
    step = session.step()
    assert step.actor == "react" and step.action == "go east"
    steps = list(session.run(3))
    assert len(steps) == 3 and session.episode.length == 4
    assert store.episodes.get(episode.id).length == 4


def test_stop_from_another_thread_ends_a_run(registry: ModelRegistry) -> None:
    session = session_with_model(registry, policy="random")
    session.reset()
    seen = []
    for step in session.run(None):
        seen.append(step.index)
        if len(seen) == 2:
            threading.Thread(target=session.stop).start()
            threading.Event().wait(0.05)
    assert len(seen) in (2, 3) and not session.episode.done


def test_human_takeover_and_hand_back(registry: ModelRegistry) -> None:
    session = session_with_model(registry)
    session.reset()
    session.step()
    session.update(replace(session.settings, policy="human"))
    with pytest.raises(StudioError, match="Human mode"):
        session.step()
    taken = session.step(action="go south")
    assert taken.actor == "human" and taken.action == "go south"
    session.update(replace(session.settings, policy="react-a"))
    assert session.step().actor == "react"
    assert [s.actor for s in session.episode.steps] == ["react", "human", "react"]


def test_changed_sampling_applies_to_the_next_step(registry: ModelRegistry) -> None:
    session = session_with_model(registry)
    session.reset()
    session.update(replace(session.settings, candidates=3, temperature=0.7))
    step = session.step()
    assert len(step.candidates) == 2
    assert session.episode.steps[0].actor == "react"


def test_fork_and_read_only_episodes(registry: ModelRegistry, tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    session = session_with_model(registry, sinks=[store.episodes.sink()], policy="expert")
    original = session.reset()
    list(session.run(4))
    forked = session.fork(2)
    assert forked.parent_id == original.id and forked.length == 2
    session.step()
    assert session.episode.length == 3
    session.open(store.episodes.get(original.id))
    assert session.read_only and session.episode.id == original.id
    with pytest.raises(StudioError, match="read-only"):
        session.step()
    again = session.fork(1)
    assert not session.read_only and again.parent_id == original.id and again.length == 1


def test_models_load_into_slots_and_are_released(registry: ModelRegistry) -> None:
    script = str(ROOT / "tests" / "data" / "xss_model.json")
    access = ModelAccess(model_dirs=(ROOT / "tests" / "data",))  # the operator's --models-dir
    first, second = StudioSession(registry, access=access), StudioSession(registry, access=access)
    info = first.load_model("b", f"scripted:{script}")
    assert info["id"] == "scripted:xss_model.json"
    second.load_model("A", f"scripted:{script}")
    assert first.models["B"] is second.models["A"]  # one copy per process
    first.unload_model("B")
    assert any(row["name"] == f"scripted:{script}" for row in registry.loaded())  # the other session still uses it
    second.close()
    assert registry.loaded() == []
    with pytest.raises(StudioError, match="Unknown model slot"):
        first.load_model("C", "default")
    with pytest.raises(StudioError, match="Cannot read the scripted model"):
        first.load_model("A", f"scripted:{ROOT / 'tests' / 'data' / 'missing.json'}")
    with pytest.raises(StudioError, match="not under a folder the studio allows"):
        first.load_model("A", "scripted:/no/such/file.json")


def test_bad_settings_change_nothing(registry: ModelRegistry) -> None:
    session = session_with_model(registry)
    episode = session.reset()
    with pytest.raises(StudioError, match="Unknown environment"):
        session.reset(replace(session.settings, env="nope"))
    with pytest.raises(StudioError, match="Model B is not loaded"):
        session.reset(replace(session.settings, policy="react-b"))
    with pytest.raises(StudioError, match="must be"):
        session.reset(replace(session.settings, env_options={"size": 99}))
    assert session.episode.id == episode.id and session.settings.env == "gridworld"


def test_attention_of_a_step_for_candidates_and_both_models(registry: ModelRegistry) -> None:
    from studio.models.hf import TransformersBackend
    from tests.support.tiny_models import tiny_gpt2, tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model_a = registry.add("tiny-llama", TransformersBackend(tiny_llama(tokenizer), tokenizer))
    session = StudioSession(
        registry, model_a=model_a, settings=EpisodeSettings(candidates=2, temperature=0.7, max_new_tokens=12)
    )
    session.reset()
    session.step()
    first = session.attention(0, "taken", "A")
    assert session.attention(0, "taken", "A") is first  # cached per step
    candidate = session.attention(0, "candidate 1", "A")
    assert candidate.length != first.length or candidate.text != first.text or candidate is not first
    session.models["B"] = registry.add("tiny-gpt2", TransformersBackend(tiny_gpt2(tokenizer), tokenizer))
    other = session.attention(0, "taken", "B")
    assert (
        other.text == first.text and other.weights.shape[2:] == first.weights.shape[2:]
    )  # same prompt and output, another model
    with pytest.raises(StudioError, match="has no candidate 5"):
        session.attention(0, "candidate 5", "A")
    for junk in ("   ", "candidate", "candidate x", "<b>1</b>", "taken 1"):  # what a hand-written client may send
        with pytest.raises(StudioError, match="pick taken or candidate 1 to 1"):
            session.attention(0, junk, "A")
    scripted = session_with_model(registry)
    scripted.reset()
    scripted.step()
    with pytest.raises(StudioError, match="cannot show its attention"):
        scripted.attention(0)


def test_left_episodes_are_marked_abandoned_never_left_running(registry: ModelRegistry, tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    session = session_with_model(registry, sinks=[store.episodes.sink()])
    first = session.reset()
    session.step()
    second = session.reset()  # a new episode: the first one was left mid-way
    session.step()
    session.close()  # the browser tab went away
    stored = {e.id: store.episodes.get(e.id) for e in (first, second)}
    assert stored[first.id].done and stored[first.id].end_reason == "abandoned: a new episode was reset"
    assert stored[second.id].done and stored[second.id].end_reason == "abandoned: the session ended"
    assert stored[first.id].success is None  # not a failure of the agent: nobody finished it


def test_live_steps_hand_out_the_output_as_it_is_written(registry: ModelRegistry) -> None:
    from studio.episodes.live import LiveOutput

    session = session_with_model(registry)
    session.reset()
    items = list(session.step_live())
    assert (
        isinstance(items[0], LiveOutput) and items[0].index == 0 and items[0].tokens == []
    )  # the card appears at once
    steps = [i for i in items if not isinstance(i, LiveOutput)]
    assert len(steps) == 1 and steps[0].raw == OUTPUTS[0] and session.episode.length == 1
    taken = list(session.run_live(2))
    assert [i.index for i in taken if not isinstance(i, LiveOutput)] == [1, 2]
    session.open(session.episode)
    with pytest.raises(StudioError, match="read-only"):
        session.step_live()


def test_a_stop_while_watching_drops_the_output(registry: ModelRegistry) -> None:
    from studio.errors import Interrupted
    from studio.episodes.live import LiveOutput

    model = registry.add(
        "slow", ScriptedBackend(["Thought: a long way west and then north.\nAction: go west"], token_seconds=0.01)
    )
    session = StudioSession(registry, model_a=model)
    session.reset()
    watched = session.step_live()
    with pytest.raises(Interrupted):
        for item in watched:
            if isinstance(item, LiveOutput) and len(item.tokens) >= 5:
                session.stop()
    assert session.episode.length == 0
