"""The seams: a backend, an environment, an export format and a setting are each added without
editing a file of the studio, and the CLI, the UI and the API offer them.

In-process tests register toys defined here; the subprocess tests install nothing either: they
put ``tests/plugin`` (a package with entry points, as someone else would publish one) on
``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import make_policy
from studio.envs.base import StudioEnv, check_env
from studio.envs.registry import REGISTRY, env_names, make_env, register_env
from studio.errors import StudioError
from studio.models.access import ModelAccess
from studio.models.base import Backend, CacheStats, Capabilities, GenerateResult, Generation, ModelCard
from studio.models.registry import SCHEMES, ModelRegistry, describe_schemes, register_backend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.settings import EpisodeSettings, setting

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "plugin"


def _plugin_module():
    """The plugin's module, loaded from its file: not through sys.path, where its entry points
    would register it in every later test of this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("agent_studio_toys", PLUGIN / "agent_studio_toys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LineWalk = _plugin_module().LineWalk


class TwoWords(Backend):
    """A backend written inside a test: ``generate`` and a card, nothing else."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.prompts: list[str] = []

    @property
    def card(self) -> ModelCard:
        return ModelCard(
            id=f"two-words:{self.action}", source="test", capabilities=Capabilities(), context_length=100_000
        )

    def generate(
        self,
        messages,
        n=1,
        sampling=None,
        stop=None,
        images=None,
        session=None,
        should_stop=None,
        assistant_prefix="",
        on_token=None,
    ) -> GenerateResult:
        self.prompts.append(messages[-1]["content"])
        text = f" I will {self.action}.\nAction: {self.action}"
        return GenerateResult([Generation(text=text, tokens=[], finish_reason="stop") for _ in range(n)], CacheStats())


@pytest.fixture()
def two_words_scheme():
    register_backend(
        "two-words", lambda request: TwoWords(request.target), summary="says one action", example="two-words:ACTION"
    )
    yield
    SCHEMES.pop("two-words", None)


def test_a_backend_defined_here_loads_by_its_scheme_and_drives_a_react_episode(two_words_scheme) -> None:
    registry = ModelRegistry()
    backend = registry.load("two-words:go east")
    assert isinstance(backend, TwoWords) and registry.load("two-words:go east") is backend  # loaded once
    assert {
        "scheme": "two-words:",
        "summary": "says one action",
        "example": "two-words:ACTION",
        "web": False,
        "from_the_browser": "no: command line only",
    } in describe_schemes()

    runner = EpisodeRunner(
        "gridworld",
        ReActPolicy(backend, ReActConfig()),
        {"size": 5, "difficulty": "easy"},
        config=RunnerConfig(max_steps=4),
    )
    runner.reset(seed=0)
    episode = runner.run()
    assert episode.length >= 1 and all(step.action == "go east" and step.valid for step in episode.steps)
    assert all(step.tokens is None for step in episode.steps)  # no logprobs: no made-up token records
    assert episode.model is not None and episode.model["id"] == "two-words:go east"
    assert len(backend.prompts) == episode.length

    # It cannot score: score mode says so in one line, and the default methods say what is missing.
    with pytest.raises(StudioError, match="cannot score actions"):
        ReActPolicy(backend, ReActConfig(action_mode="score"))
    with pytest.raises(StudioError, match="cannot show its attention"):
        backend.attention([], "x")
    # A scheme registered without web=True is the operator's: a browser cannot load it.
    with pytest.raises(StudioError, match="only from the command line"):
        registry.load("two-words:go west", access=ModelAccess())


def test_the_models_tab_lists_every_scheme(two_words_scheme) -> None:
    from agent_studio.components import model_panel

    with gr.Blocks():
        model_panel.build(gr.State(), ModelAccess())
        tables = [
            block.value
            for block in gr.context.Context.root_block.blocks.values()
            if getattr(block, "elem_id", None) == "as-model-schemes"
        ]
    assert len(tables) == 1 and "two-words:ACTION" in tables[0] and "scripted:FILE.json" in tables[0]


def test_an_environment_registers_runs_by_name_or_as_an_instance_and_forks() -> None:
    register_env("line-test", LineWalk, default_max_steps=12)
    try:
        assert "line-test" in env_names()
        env = make_env("line-test", {"length": 4})
        check_env(env)  # the base class's snapshots (seed, done, instruction) work for it unchanged
        assert set(env.get_state()) == {"seed", "position", "done", "instruction"}

        runner = EpisodeRunner("line-test", make_policy("expert"), {"length": 4})
        assert runner.max_steps == 12
        runner.reset(seed=0)
        episode = runner.run()
        assert episode.success and [s.action for s in episode.steps] == ["right"] * 3 and episode.env == "line-test"
        forked = runner.fork(episode, 1)
        assert runner.env.get_state()["position"] == 1 and forked.forked_at == 1

        class Unlisted(LineWalk):
            name = "unlisted"
            default_max_steps = 7

        made = Unlisted(length=3)  # an environment the registry has never heard of
        by_instance = EpisodeRunner(made, make_policy("expert"))
        assert by_instance.env is made and by_instance.max_steps == 7 and by_instance.env_name == "unlisted"
        by_instance.reset(seed=1)
        assert by_instance.run().success
        with pytest.raises(StudioError, match="options to the environment"):
            EpisodeRunner(made, make_policy("expert"), {"length": 5})
        with pytest.raises(ValueError, match="already registered"):
            register_env("line-test", StudioEnv)
    finally:
        REGISTRY.unregister("line-test")
    with pytest.raises(StudioError, match="Unknown environment 'line-test'"):
        make_env("line-test")


def test_the_episode_panel_offers_a_registered_environment() -> None:
    from agent_studio.components import episode_panel

    register_env("line-ui", LineWalk)
    try:
        with gr.Blocks():
            panel = episode_panel.build(gr.State())
        assert "line-ui" in [choice[1] for choice in panel.form["env"].choices]
    finally:
        REGISTRY.unregister("line-ui")


@dataclass(frozen=True)
class MoreSettings(EpisodeSettings):
    """The schema with one more setting, as a change to studio/settings.py would add it."""

    history_turns: int = setting(
        8, "History turns", "past turns the prompt keeps", widget="slider", minimum=1, maximum=64, step=1
    )


def test_a_new_setting_becomes_a_cli_flag_a_widget_and_an_api_value() -> None:
    from agent_studio.cli.options import add_setting_flags, settings_from_args
    from agent_studio.components.settings_form import SettingsForm
    from studio.settings import settings_from

    parser = argparse.ArgumentParser()
    add_setting_flags(parser, parser, MoreSettings)
    args = parser.parse_args(["--history-turns", "12", "--candidates", "3"])
    settings = settings_from_args(args, MoreSettings)
    assert (
        settings.history_turns == 12 and settings.candidates == 3 and settings.temperature == 0.7
    )  # the one K > 1 rule
    with pytest.raises(SystemExit):
        parser.parse_args(["--history-turns", "65"])
    assert "--history-turns" in parser.format_help()

    with gr.Blocks():
        form = SettingsForm(MoreSettings)
        form.build("sampling")
    widget = form["history_turns"]
    assert (
        isinstance(widget, gr.Slider)
        and widget.label == "History turns"
        and (widget.minimum, widget.maximum, widget.value) == (1, 64, 8)
    )
    assert widget.elem_id == "as-history-turns"
    assert (
        form.settings(
            *[4 if name == "history_turns" else widget_default(form, name) for name in form.widgets]
        ).history_turns
        == 4
    )

    assert settings_from({"history_turns": "9"}, MoreSettings).history_turns == 9  # as an API value arrives
    with pytest.raises(StudioError, match="History turns"):
        settings_from({"history_turns": 0}, MoreSettings)
    with pytest.raises(StudioError, match="Unknown setting 'histroy_turns'"):
        settings_from({"histroy_turns": 3}, MoreSettings)


def widget_default(form, name: str):
    return form[name].value


def test_an_export_format_registered_here_is_offered_and_written(tmp_path: Path) -> None:
    from agent_studio.storage import open_store
    from agent_studio.storage.export import EXPORT_FORMATS, export, format_names, register_export

    def lengths(store, summary, images):
        """episode lengths"""
        for row in store.episodes.summaries():
            yield {"episode_id": row.id, "steps": row.steps}

    register_export("lengths", lengths, "episode lengths")
    try:
        assert "lengths" in format_names()
        with open_store(tmp_path / "s.db") as store:
            runner = EpisodeRunner("gridworld", make_policy("expert"), sinks=[store.episodes.sink()])
            runner.reset(seed=0)
            episode = runner.run()
            summary = export(store, "lengths", tmp_path / "lengths.jsonl")
        assert summary.records == 1
        assert json.loads((tmp_path / "lengths.jsonl").read_text()) == {
            "episode_id": episode.id,
            "steps": episode.length,
        }
        parser_help = run_cli("export", "--help").stdout  # another process does not see it: it was registered here only
        assert "lengths " not in parser_help and "lengths\n" not in parser_help
    finally:
        EXPORT_FORMATS.pop("lengths", None)


# -- a published package, through entry points ------------------------------------------------------
def run_cli(*args: str, plugin: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PLUGIN)} if plugin else dict(os.environ)
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def test_a_package_with_entry_points_extends_the_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "plugin.db")
    listed = [json.loads(line) for line in run_cli("envs", "--json", plugin=True).stdout.splitlines()]
    walk = next(row for row in listed if row["name"] == "linewalk")
    assert (
        walk["summary"] == "Walk right along a line of cells to the flag."
        and walk["expert"]
        and walk["default_max_steps"] == 30
    )
    assert [row["name"] for row in listed][:3] == ["gridworld", "household", "wikihop"]  # the built-ins first

    expert = run_cli(
        "run", "--env", "linewalk", "--env-opt", "length=6", "--policy", "expert", "--json", "--db", db, plugin=True
    )
    assert expert.returncode == 0, expert.stderr
    assert json.loads(expert.stdout) | {"episode_id": None} == json.loads(expert.stdout) | {
        "episode_id": None,
        "success": True,
        "steps": 5,
    }

    react = run_cli(
        "run", "--env", "linewalk", "--policy", "react", "--model", "echo:fast", "--json", "--db", db, plugin=True
    )
    assert react.returncode == 0, react.stderr
    assert json.loads(react.stdout)["success"] is True

    schemes = run_cli("models", "--schemes", plugin=True).stdout
    assert "echo:NAME: A model that always goes right (echo:ANY_NAME). (from the browser: yes)" in schemes.splitlines()
    assert "actions" in run_cli("export", "--help", plugin=True).stdout
    out = tmp_path / "actions.jsonl"
    exported = run_cli("export", "--format", "actions", "--out", str(out), "--db", db, plugin=True)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        len(rows) == 5 + 4
        and {row["action"] for row in rows} == {"right"}
        and {row["env"] for row in rows} == {"linewalk"}
    )

    without = run_cli("run", "--env", "linewalk", "--policy", "expert")
    assert without.returncode == 2 and "Unknown environment 'linewalk'" in without.stderr


def test_the_episode_panel_offers_the_action_modes_the_model_can_do(two_words_scheme) -> None:
    from agent_studio.components.episode_panel import action_modes
    from studio.models.scripted import ScriptedBackend
    from studio.session import StudioSession

    registry = ModelRegistry()
    session = StudioSession(registry, model_a=registry.load("two-words:go east"))
    session.models["B"] = ScriptedBackend(["Thought: x\nAction: go east"])
    only_generate = action_modes(session, "react-a", "score")
    assert only_generate.choices == [("generate", "generate")] and only_generate.value == "generate"
    assert "cannot score actions" in only_generate.info
    assert action_modes(session, "react-b", "score").choices == [("generate", "generate"), ("score", "score")]
    assert action_modes(session, "expert", "generate").choices == [("generate", "generate"), ("score", "score")]


def test_a_verifier_from_a_package_is_offered_by_run_and_picks_the_action(tmp_path: Path) -> None:
    """A verifier registers through an entry point: ``run --verifier`` takes it, it scores the K
    outputs, and the step records it; without the package the name is refused in one line."""
    from agent_studio.storage import open_store

    db = str(tmp_path / "verified.db")
    assert "shortest" in run_cli("run", "--help", plugin=True).stdout
    ran = run_cli(
        "run", "--env", "linewalk", "--policy", "react", "--model", "echo:fast", "--candidates", "3",
        "--verifier", "shortest", "--json", "--db", db, plugin=True,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    with open_store(db) as store:
        episode = store.episodes.get(json.loads(ran.stdout)["episode_id"])
    assert episode.policy_config["verifier"] == "shortest"
    record = episode.steps[0].extra["verifier"]
    assert record["name"] == "shortest" and record["scores"][0] == -float(len(episode.steps[0].raw))

    refused = run_cli("run", "--env", "gridworld", "--policy", "react", "--verifier", "shortest")
    assert refused.returncode == 2 and "invalid choice: 'shortest'" in refused.stderr


def test_a_registered_verifier_is_in_the_episode_panels_dropdown() -> None:
    from agent_studio.components.settings_form import SettingsForm
    from studio.scaling import verifier_registry
    from studio.scaling.verifier_registry import register_verifier, verifier_names

    verifier_names()  # the built-ins first, whichever test ran before this one
    shortest = _plugin_module().Shortest()
    register_verifier(shortest)
    try:
        with gr.Blocks():
            form = SettingsForm(EpisodeSettings)
            form.build("verifier")
        offered = [value for _label, value in form["verifier"].choices]
        assert offered == verifier_names() and offered[-1] == "shortest" and offered[0] == "first"
        with pytest.raises(StudioError, match="already registered"):
            register_verifier(type("Other", (), {"name": "shortest", "needs_judge": False, "scores": lambda *a: []})())
    finally:
        verifier_registry._verifiers.pop("shortest", None)


def test_an_importer_from_a_package_imports_through_the_cli(tmp_path: Path) -> None:
    """An importer registers through an entry point: ``import --from`` takes it, and its episodes are
    stored, searchable, and say where they came from; without the package the name is refused."""
    from agent_studio.storage import open_store

    db = str(tmp_path / "imported.db")
    (tmp_path / "run.csv").write_text("go north\nopen door\n", encoding="utf-8")
    done = run_cli("import", "--from", "csvactions", str(tmp_path / "run.csv"), "--db", db, plugin=True)
    assert done.returncode == 0, done.stderr
    assert "stored 1 episode (2 steps read) from csvactions" in done.stdout
    with open_store(db) as store:
        (hit,) = store.search.search("door")
        assert store.episodes.get(hit.episode_id).source["format"] == "csvactions" and hit.step_index == 1
    refused = run_cli("import", "--from", "csvactions", str(tmp_path / "run.csv"), "--db", db)
    assert refused.returncode == 2 and "No importer 'csvactions'" in refused.stderr
