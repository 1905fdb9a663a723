"""The episode browser's filter lists every environment the store holds (plugins' and gym ids too), and
its outcome column says how each episode stands."""

from __future__ import annotations

from pathlib import Path

from agent_studio.components.browser_panel import env_choices, outcome_word, rows
from agent_studio.storage import open_store
from studio.agents.scripted import make_policy
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from tests.support.store_helpers import run_scripted


def test_the_filter_lists_every_stored_environment_and_outcomes_are_words(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        run_scripted(store, "random", env="gym:FrozenLake-v1", max_steps=3)
        runner = EpisodeRunner(
            "gym:Pendulum-v1", make_policy("random"), {"bins": 8}, sinks=[store.episodes.sink()],
            config=RunnerConfig(max_steps=2),
        )  # fmt: skip
        runner.reset(seed=0)
        runner.run()
        running = EpisodeRunner("gridworld", make_policy("expert"), sinks=[store.episodes.sink()])
        running.reset(seed=1)
        running.step()
        choices = env_choices(store)
        assert choices[0] == "" and {"gym:FrozenLake-v1", "gym:Pendulum-v1", "gridworld"} <= set(choices)
        outcomes = {row[1]: row[5] for row in rows(store, "", "", "", "any", "")}
        assert outcomes["gym:Pendulum-v1"] == "n/a" and outcomes["gridworld"] == "running"
        assert outcomes["gym:FrozenLake-v1"] in ("success", "failure")
        running.abandon()
        (stood,) = [r for r in store.episodes.summaries() if r.env == "gridworld"]
        assert outcome_word(stood) == "abandoned"


def test_every_filter_field_of_the_tab_reaches_the_filter() -> None:
    """The fields the Search button sends are the tab's filter fields, in the order episode_filter reads
    them: a field left out of the list would be on the page and silently do nothing."""
    import inspect

    import gradio as gr

    from agent_studio.components.browser_panel import build, episode_filter

    with gr.Blocks():
        panel = build(None)
    names = list(inspect.signature(episode_filter).parameters)
    assert [getattr(panel, name) for name in names] == panel.filters
    judged = episode_filter(*["", "", "", "any", "", "any", "", "", 1, "", "", "yes"])
    assert judged.judged is True
