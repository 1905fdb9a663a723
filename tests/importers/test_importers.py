"""Each importer reads what another harness really wrote (Inspect's own log writer, LeRobot's own
dataset writer, AgentLab's pickles) into episodes the store keeps, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studio.errors import StudioError
from studio.importers.registry import importer_names, read_episodes
from studio.importers.transcript import prompt_at
from tests.support import recorded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inspect_eval_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorded.inspect_log(tmp_path_factory.mktemp("inspect"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_format_is_registered() -> None:
    assert importer_names()[:4] == ["inspect", "chat", "agentlab", "lerobot"]


def test_an_inspect_log_imports_with_its_samples_turns_tool_calls_and_scores(store, inspect_eval_log: Path) -> None:
    episodes = list(read_episodes("inspect", inspect_eval_log))
    assert [e.instruction for e in episodes] == ["What is 1+2?", "What is 2+2?"]
    assert [e.success for e in episodes] == [True, False]  # match(): "3" is right, "5" is not
    first = episodes[0]
    assert [s.action for s in first.steps] == ['add({"x": 1, "y": 2})', "3"]
    assert first.steps[0].next_observation == "[tool add] 3" == first.steps[1].observation
    assert first.model["id"] == "mockllm/model" and first.env == "inspect:task"
    assert first.source["format"] == "inspect" and first.source["sha256"] == sha256(inspect_eval_log)
    assert first.source["scores"]["match"]["value"] == "C" and first.source["prompt"] == "rebuilt"
    # The rebuilt prompt of the answer: the question, the model's tool call, the tool's result.
    assert [m["role"] for m in prompt_at(first, 1)][-3:] == ["user", "assistant", "user"]
    assert prompt_at(first, 1)[-1]["content"] == "[tool add] 3"
    counts = store.episodes.save_stream(iter(episodes))
    assert counts["stored"] == 2 and counts["steps"] == 4
    again = store.episodes.save_stream(read_episodes("inspect", inspect_eval_log))
    assert again["unchanged"] == 2 and again["stored"] == 0
    stored = store.episodes.get(first.id)
    assert stored.source == first.source and [s.action for s in stored.steps] == [s.action for s in first.steps]


def test_a_json_inspect_log_reads_the_same(tmp_path: Path, inspect_eval_log: Path) -> None:
    json_log = recorded.inspect_log(tmp_path, "json")
    from_json = list(read_episodes("inspect", json_log))
    from_eval = list(read_episodes("inspect", inspect_eval_log))
    assert [[s.action for s in e.steps] for e in from_json] == [[s.action for s in e.steps] for e in from_eval]


def test_chat_jsonl_imports_with_tool_calls_and_rebuilt_prompts(tmp_path: Path, store) -> None:
    path = recorded.chat_jsonl(tmp_path)
    first, second = read_episodes("chat", path)
    assert first.instruction == "Find the capital of France." and first.model == {"id": "gpt-test"}
    assert first.steps[0].thought == "I should look it up."
    assert first.steps[0].action == 'search({"q": "capital of France"})'
    assert first.steps[1].observation == "[tool search] Paris is the capital of France."
    assert first.success is True and second.success is False  # score 0
    assert second.steps[0].action == "Goodbye."  # a list of text parts
    messages = recorded.chat_records()[0]["messages"]
    rebuilt = prompt_at(first, 1)
    assert rebuilt[0] == {"role": "system", "content": "You are a careful agent."}
    assert rebuilt[1] == {"role": "user", "content": messages[1]["content"]}
    assert rebuilt[2]["content"] == 'I should look it up.\nsearch({"q": "capital of France"})'
    assert len(rebuilt) == 4  # system, question, tool call, tool result: everything before the answer
    assert store.episodes.save_stream(read_episodes("chat", path))["stored"] == 2


def test_a_datasets_folder_imports_like_its_jsonl(tmp_path: Path) -> None:
    import datasets

    records = recorded.chat_records()[:1]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "conversations"))
    (episode,) = read_episodes("chat", tmp_path / "conversations")
    (from_jsonl,) = list(read_episodes("chat", recorded.chat_jsonl(tmp_path)))[:1]
    assert [s.action for s in episode.steps] == [s.action for s in from_jsonl.steps]
    assert episode.instruction == from_jsonl.instruction


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"messages": []}', "non-empty list of messages"),
        ('{"messages": [{"role": "wizard", "content": "x"}]}', "role 'wizard'"),
        ('{"messages": [{"role": "user", "content": "only a question"}]}', "no assistant message"),
        ("not json", "is not JSON"),
        ('{"text": "no messages"}', "needs 'messages'"),
    ],
)
def test_a_bad_chat_record_is_refused_in_one_line_with_its_line_number(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n' + line)
    with pytest.raises(StudioError, match=f"Line 2 of bad.jsonl: .*{reason}|Line 2 of bad.jsonl {reason}"):
        list(read_episodes("chat", path))


def test_an_agentlab_folder_imports_steps_actions_screenshots_and_axtree(tmp_path: Path, store) -> None:
    folder = recorded.agentlab_folder(tmp_path)
    (episode,) = read_episodes("agentlab", folder)
    assert [s.action for s in episode.steps] == ["click('13')", "fill('7', 'hello')"]
    assert episode.instruction == "Click the OK button." and episode.success is True
    assert episode.steps[0].observation == "[13] button 'OK' (page 0)"
    assert episode.steps[0].next_observation == "[13] button 'OK' (page 1)"
    assert episode.steps[0].thought == "thinking 0"
    # The error the second action caused is in the observation after it: that step was invalid.
    assert episode.steps[1].valid is False and episode.steps[1].invalid_reason == "element 7 is not a field"
    assert episode.steps[1].reward == 1.0 and episode.steps[1].terminated
    assert episode.steps[1].frame.shape == (20, 30, 3) and episode.steps[1].frame[0, 19, 0] == 255
    assert episode.steps[1].frame[0, 20, 0] == 0
    assert store.episodes.save_stream(iter([episode]))["stored"] == 1


class Shell:
    """A pickle that runs a command when loaded by an ordinary unpickler."""

    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch /tmp/agent-studio-pwned",))


@pytest.mark.parametrize(
    "payload, named",
    [
        (Shell(), "os.system|posix.system"),
        (print, "builtins.print"),  # a callable as a value
        (subprocess.Popen, "subprocess.Popen"),
        (recorded.agentlab_folder, "agentlab_folder"),  # a function of the test module
    ],
)
def test_a_pickle_that_holds_code_is_refused_and_nothing_is_stored(
    tmp_path: Path, payload, named: str, store_url
) -> None:
    folder = recorded.agentlab_folder(tmp_path, extra=payload)
    done = subprocess.run(
        [sys.executable, "app.py", "import", "--from", "agentlab", str(tmp_path), "--db", store_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "step_0.pkl.gz: refused" in done.stderr
    assert "code, not data" in done.stderr
    assert not Path("/tmp/agent-studio-pwned").exists()
    from agent_studio.storage import open_store

    with open_store(store_url) as store:
        assert store.episodes.count_episodes() == 0
    assert folder.exists()


def test_an_agentlab_function_reference_is_refused_too(tmp_path: Path) -> None:
    """A name under an allowed package that is kept as a value (a class or function, not an object built
    from it) is code, whatever package it names."""
    recorded._agentlab_module()
    folder = recorded.agentlab_folder(tmp_path)
    with gzip.open(folder / "step_1.pkl.gz", "wb") as handle:
        pickle.dump({"action": "click('1')", "obs": {}, "agent_info": recorded.StepInfo}, handle)
    with pytest.raises(
        StudioError, match="step_1.pkl.gz: refused: the pickle holds agentlab.experiments.loop.StepInfo"
    ):
        list(read_episodes("agentlab", tmp_path))


def test_a_lerobot_dataset_written_by_lerobot_imports_frames_states_and_actions(tmp_path: Path, store) -> None:
    root = recorded.lerobot_dataset(tmp_path)
    episodes = list(read_episodes("lerobot", root))
    assert [e.length for e in episodes] == [5, 6]
    assert [e.instruction for e in episodes] == ["push block 0", "push block 1"]
    second = episodes[1]
    for t, step in enumerate(second.steps):
        np.testing.assert_allclose(step.extra["state"], [t, 1, 0.5])
        np.testing.assert_allclose(step.extra["action_vector"], [t * 0.1, -1], rtol=1e-6)
        # The camera frame at that time (AV1 is lossy: the grey band's edge is where it was written).
        frame = step.frame.astype(int)
        assert frame.shape == (32, 48, 3)
        if t:
            assert frame[16, 8 * t - 3, 0] > 150
        assert frame[16, min(8 * t + 3, 47), 0] < 60
    assert second.steps[-1].terminated and not second.steps[0].terminated
    assert second.env_options["action_names"] == ["dx", "dy"]
    assert store.episodes.save_stream(iter(episodes))["stored"] == 2
    assert store.episodes.get(second.id).steps[3].frame.shape == (32, 48, 3)
    # Opened in the Episode tab: no snapshot to redraw the state after the last action from, so the
    # frame shown is the last one recorded.
    from studio.models.registry import ModelRegistry
    from studio.session import StudioSession

    session = StudioSession(ModelRegistry())
    session.open(second)
    np.testing.assert_array_equal(session.current_frame(), second.steps[-1].frame)
    session.close()


def test_a_hostile_lerobot_dataset_is_refused_in_one_line(tmp_path: Path) -> None:
    import json as json_module
    import shutil

    root = recorded.lerobot_dataset(tmp_path)
    info = json_module.loads((root / "meta" / "info.json").read_text())
    cases = {
        "../../etc/{chunk_index}{file_index}.parquet": "outside itself",
        "data/{nothing}.parquet": "not a readable LeRobot v3 dataset",
    }
    for template, reason in cases.items():
        copy = tmp_path / f"copy{len(reason)}"
        shutil.copytree(root, copy)
        (copy / "meta" / "info.json").write_text(json_module.dumps({**info, "data_path": template}))
        with pytest.raises(StudioError, match=reason):
            list(read_episodes("lerobot", copy))
    old = tmp_path / "old"
    shutil.copytree(root, old)
    (old / "meta" / "info.json").write_text(json_module.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(StudioError, match="v2.1 dataset; this reader takes v3.0"):
        list(read_episodes("lerobot", old))
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    for video in (broken / "videos").rglob("*.mp4"):
        video.write_bytes(b"not a video")
    with pytest.raises(StudioError, match="could not be read|not a readable"):
        list(read_episodes("lerobot", broken))


def test_a_deeply_nested_chat_line_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(StudioError, match="Line 1 of deep.jsonl"):
        list(read_episodes("chat", path))


def test_exports_of_an_imported_conversation_carry_the_prompt_its_model_saw(tmp_path: Path, store) -> None:
    import json as json_module

    from agent_studio.storage.export import export

    first, _second = read_episodes("chat", recorded.chat_jsonl(tmp_path))
    store.episodes.save_stream(iter([first, _second]))
    export(store, "sft", tmp_path / "sft.jsonl", prompt="full")
    (row,) = [json_module.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert row["messages"][:-1] == prompt_at(first, 1)  # system, question, tool call, tool result
    assert row["messages"][-1] == {"role": "assistant", "content": "The capital of France is Paris."}


def test_an_imported_episode_without_snapshots_says_it_cannot_be_forked(tmp_path: Path) -> None:
    """Not "model A is not loaded" (the first thing a fork would otherwise ask for): the reason."""
    from studio.models.registry import ModelRegistry
    from studio.session import StudioSession

    (episode, _second) = read_episodes("chat", recorded.chat_jsonl(tmp_path))
    session = StudioSession(ModelRegistry())
    session.open(episode)
    with pytest.raises(
        StudioError, match=r"recorded elsewhere \(chat\) with no environment snapshots: it cannot be forked"
    ):
        session.fork(1)
    assert session.episode is episode  # still shown, read-only
    session.close()
