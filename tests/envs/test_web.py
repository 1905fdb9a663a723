"""Web tasks in a real Chromium (BrowserGym + the miniwob package's pages, offline): tasks reset and
step, actions are checked before they run (a wrong element id is an invalid step with its reason, code
never runs), a scripted model solves a task and the success is stored, forks replay and check every
page, the browser is driven from one thread whatever thread steps, episodes run side by side in a sweep,
and a browser killed mid-episode ends that episode in one line."""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from studio.agents.scripted import RandomPolicy
from studio.envs.base import check_env
from studio.envs.registry import make_env
from studio.envs.web.browser import chromium_processes
from studio.envs.web.env import WebTask, miniwob_tasks
from studio.episodes.runner import EpisodeRunner
from studio.errors import BadOption, StudioError
from studio.evaluation.sweep import SweepSpec, run_sweep
from tests.support.store_helpers import open_store

ROOT = Path(__file__).resolve().parents[2]
#: Quick settling: the pages here are static between actions (the default, 0.5 s, is BrowserGym's).
FAST = {"wait": 0.05}
TEN_TASKS = (
    "click-button",
    "click-link",
    "click-checkboxes",
    "click-dialog",
    "click-tab",
    "enter-text",
    "focus-text",
    "login-user",
    "choose-list",
    "click-option",
)


def _bid_of(observation: str, name: str) -> str:
    """The element id of the line naming ``name`` (``[13] button 'no'`` -> ``13``)."""
    for line in observation.splitlines():
        if f"'{name}'" in line and line.strip().startswith("["):
            return line.strip()[1:].split("]", 1)[0]
    raise AssertionError(f"no element {name!r} in:\n{observation}")


def test_every_miniwob_task_is_listed_and_ten_reset_and_step_side_by_side() -> None:
    tasks = miniwob_tasks()
    assert len(tasks) >= 100 and "web:miniwob.click-button" in tasks
    import subprocess
    import sys

    listed = subprocess.run(
        [sys.executable, "-m", "agent_studio.cli.main", "envs", "--json"], capture_output=True, text=True
    )
    (web,) = [json.loads(line) for line in listed.stdout.splitlines() if json.loads(line)["name"] == "web:<id>"]
    assert web["members"] == tasks and web["fork"] == "replay"

    def try_task(task: str) -> tuple[str, str, tuple[int, ...], str]:
        env = make_env(f"web:miniwob.{task}", FAST)
        try:
            observation, _ = env.reset(seed=3)
            frame = env.render()
            action = env.sample_action(np.random.default_rng(0))
            assert env.validate_action(action).valid, action
            after, reward, _terminated, _truncated, info = env.step(action)
            assert isinstance(after, str) and "invalid_action" not in info and reward in (0.0, 1.0)
            return env.instruction, observation, frame.shape, frame.dtype.str
        finally:
            env.close()

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = dict(zip(TEN_TASKS, pool.map(try_task, TEN_TASKS)))
    for task, (instruction, observation, shape, dtype) in results.items():
        assert instruction and "[" in observation, task  # a goal, and elements with their ids
        assert len(shape) == 3 and shape[2] == 3 and shape[0] > 100 and dtype == "|u1", task
    assert "button 'no'" in make_env("web:miniwob.click-button", FAST).reset(seed=0)[0]


def test_a_scripted_model_solves_click_button_and_the_success_is_stored(tmp_path: Path) -> None:
    env = make_env("web:miniwob.click-button", FAST)
    observation, _ = env.reset(seed=0)
    wanted = env.instruction.split('"')[1]
    bid = _bid_of(observation, wanted)
    env.close()
    script = tmp_path / "model.json"
    script.write_text(json.dumps({"outputs": [f"Thought: the {wanted} button is [{bid}].\nAction: click('{bid}')"]}))
    import subprocess
    import sys

    db = tmp_path / "s.db"
    run = subprocess.run(
        [sys.executable, "-m", "agent_studio.cli.main", "run", "--env", "web:miniwob.click-button",
         "--env-opt", "wait=0.05", "--policy", "react", "--model", f"scripted:{script}", "--seed", "0",
         "--db", f"sqlite:///{db}", "--json", "--frames"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[0])
    assert summary["success"] is True and summary["steps"] == 1
    stored = open_store(db).episodes.get(summary["episode_id"])
    (step,) = stored.steps
    assert stored.success and step.action == f"click('{bid}')" and step.reward == 1.0
    assert step.prompt and "click(bid" in json.dumps(step.prompt)  # the prompt says how to write an action
    assert step.frame is not None and step.info["target"]["bids"] == [bid]


def test_a_wrong_element_id_is_an_invalid_step_with_its_reason_and_code_never_runs(tmp_path: Path) -> None:
    env = make_env("web:miniwob.click-button", FAST)
    runner = EpisodeRunner(env, RandomPolicy(seed=0))
    runner.reset(seed=0)
    before = env.get_state()
    step = runner.step("click('999')")
    assert not step.valid and "no element [999]" in step.invalid_reason and "element missing" in step.invalid_reason
    assert env.get_state() == before and not runner.episode.done
    marker = tmp_path / "ran"
    for hostile in (
        f"__import__('os').system('touch {marker}')",
        f"click('13'); open('{marker}', 'w')",
        f"click(open('{marker}', 'w'))",
        "goto('file:///etc/passwd')",
        "upload_file('13', '/etc/passwd')",
        "click(*['13'])",
        "click('13', evil=1)",
        "mouse_click(-5, 10)",
        "fill('13', '" + "x" * 5000 + "')",
    ):
        check = env.validate_action(hostile)
        assert not check.valid and "\n" not in check.reason, hostile
    assert not marker.exists() and env.get_state() == before
    env.close()


def test_a_fork_replays_five_steps_and_reproduces_every_page() -> None:
    env = make_env("web:miniwob.click-checkboxes", FAST)
    runner = EpisodeRunner(env, RandomPolicy(seed=0))
    episode = runner.reset(seed=4)
    boxes = [_bid for _bid in env.elements() if env.elements()[_bid][4]][:5]
    for bid in (boxes * 5)[:5]:
        if not runner.episode.done:
            runner.step(f"click({bid!r})")
    steps = episode.steps
    assert len(steps) >= 3 and len({s.observation for s in steps}) >= 2  # the page changed on the way
    at = len(steps) - 1
    fork = EpisodeRunner("web:miniwob.click-checkboxes", RandomPolicy(seed=0), FAST)
    forked = fork.fork(episode, at)
    assert fork.observation == steps[at].observation  # the page text, element for element
    assert fork.env.get_state()["pages"] == steps[at].state["pages"]
    # A recorded page that the replay does not reach is a refusal, in one line.
    tampered = json.loads(json.dumps(steps[at].state))
    tampered["pages"][1] = "0" * 16
    with pytest.raises(BadOption, match="replayed page differed from the recorded one after action 1") as refused:
        fork.env.restore(tampered)
    assert "\n" not in str(refused.value)
    assert forked.forked_at == at
    fork.env.close()
    env.close()


def test_the_contract_holds_with_forks_by_replay() -> None:
    env = make_env("web:miniwob.click-button", FAST)
    assert env.fork_mode == "replay"
    check_env(env, steps=3)
    env.close()


def test_the_browser_is_driven_from_one_thread_whatever_thread_steps() -> None:
    env = make_env("web:miniwob.click-checkboxes", FAST)
    assert isinstance(env, WebTask)
    env.reset(seed=1)
    gym_env = env._holder["gym"]
    seen: list[str] = []
    real_step = gym_env.step

    def recording_step(action: str):
        seen.append(threading.current_thread().name)
        return real_step(action)

    gym_env.step = recording_step
    callers = []

    def step_once() -> None:
        callers.append(threading.current_thread().name)
        env.step(env.sample_action(np.random.default_rng(len(callers))))

    for number in range(3):
        thread = threading.Thread(target=step_once, name=f"caller-{number}")
        thread.start()
        thread.join()
    step_once()  # and from this thread
    assert len(seen) == 4 and set(seen) == {env._actor.thread.name} and not set(seen) & set(callers)
    # Playwright itself refuses any other thread: what the actor is for.
    page = gym_env.unwrapped.page
    with pytest.raises(Exception, match="thread"):
        page.title()
    env.close()


def test_eight_web_episodes_side_by_side_in_a_sweep_finish_with_nothing_lost(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    spec = SweepSpec.build(["random"], ["web:miniwob.click-button"], "0-7", {"max_steps": 4},
                           env_options={"web:miniwob.click-button": FAST})  # fmt: skip
    record = store.sweeps.create(spec, "web")
    outcome = run_sweep(spec, record.id, [store.episodes.sink()], lambda name: None, parallel=8)
    assert outcome.completed == 8 and not outcome.failed
    episodes = store.sweeps.episodes_of(record.id)
    assert sorted(e.seed for e in episodes) == list(range(8))
    for episode in episodes:
        assert episode.done and episode.end_reason and 1 <= episode.length <= 4
        assert [s.index for s in episode.steps] == list(range(episode.length))


def test_a_browser_killed_mid_episode_ends_that_episode_in_one_line() -> None:
    env = make_env("web:miniwob.click-checkboxes", FAST)
    runner = EpisodeRunner(env, RandomPolicy(seed=0))
    runner.reset(seed=2)
    killed = chromium_processes()
    assert killed, "no Chromium process found under this test"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    step = runner.step(env.sample_action(np.random.default_rng(0)))
    episode = runner.episode
    assert step.truncated and episode.done and episode.success is False
    assert episode.end_reason.startswith("browser stopped") and "\n" not in episode.end_reason
    with pytest.raises(StudioError, match="over"):
        runner.step("click('1')")
    runner.reset(seed=2)  # the next reset starts another browser
    assert "[" in runner.observation and env.broken is None
    env.close()


def test_monte_carlo_values_of_a_web_step_come_from_replayed_forks() -> None:
    from studio.agents.scripted import make_policy
    from studio.scaling.values import estimate_step_values
    from studio.trace import Candidate

    runner = EpisodeRunner("web:miniwob.click-button", RandomPolicy(seed=0), FAST)
    runner.reset(seed=0)
    wanted = runner.env.instruction.split('"')[1]
    right = _bid_of(runner.observation, wanted)
    wrong = next(_bid_of(runner.observation, name) for name in ("no", "Ok", "submit") if name != wanted)
    step = runner.step(f"click({right!r})")
    step.candidates.append(Candidate(raw=f"click({wrong!r})", action=f"click({wrong!r})"))
    values = estimate_step_values(
        runner.episode, 0, lambda i, _b: make_policy("random", seed=i), rollout_policy="random", rollouts=2, horizon=2
    )
    by_output = {value.output: value for value in values}
    # The right button pays 1 and ends the task; the wrong one ends it with nothing, in every rollout.
    assert by_output["taken"].q == 1.0 and by_output["taken"].soft == 1.0
    assert by_output["candidate 1"].q == 0.0 and not by_output["candidate 1"].hard
    runner.env.close()


def test_best_of_k_with_the_mc_verifier_picks_the_click_that_pays(tmp_path: Path) -> None:
    from studio.models.scripted import load_scripted
    from studio.policies import policy_from_settings
    from studio.settings import EpisodeSettings

    env = make_env("web:miniwob.click-button", FAST)
    observation, _ = env.reset(seed=0)
    wanted = env.instruction.split('"')[1]
    right = _bid_of(observation, wanted)
    wrong = next(_bid_of(observation, name) for name in ("no", "Ok", "submit") if name != wanted)
    script = tmp_path / "model.json"
    outputs = [f"Thought: this one.\nAction: click('{bid}')" for bid in (wrong, right)]
    script.write_text(json.dumps({"outputs": outputs}))
    settings = EpisodeSettings(
        env="web:miniwob.click-button", candidates=2, verifier="mc", mc_rollout_policy="random", mc_rollouts=1
    )
    runner = EpisodeRunner(env, policy_from_settings(settings, load_scripted(str(script))))
    runner.reset(seed=0)
    step = runner.step()
    # The first proposal clicks the wrong button; rolled out from a replayed fork it pays nothing.
    assert step.action == f"click('{right}')" and step.candidates[0].action == f"click('{wrong}')"
    assert runner.episode.success
    env.close()


def test_a_kept_browser_gives_each_episode_a_fresh_context() -> None:
    """Browsers are kept between resets (and between environments on the same thread), but an episode
    never sees another's cookies or storage: each reset opens a new browser context."""

    def page_of(env):
        return env._holder["gym"].unwrapped.page

    def leave_traces(env) -> int:
        page = page_of(env)
        page.evaluate("() => localStorage.setItem('left-behind', 'yes')")
        page.context.add_cookies([{"name": "c", "value": "1", "url": "http://example.com/"}])
        assert page.evaluate("() => localStorage.getItem('left-behind')") == "yes"
        return id(page.context.browser)

    def traces(env) -> tuple[int, object, list]:
        page = page_of(env)
        return (
            id(page.context.browser),
            page.evaluate("() => localStorage.getItem('left-behind')"),
            page.context.cookies(),
        )

    first = make_env("web:miniwob.click-button", FAST)
    first.reset(seed=0)
    actor = first._actor
    browser = actor.call(leave_traces, first)
    first.reset(seed=1)
    assert actor.call(traces, first) == (browser, None, [])  # the same browser, nothing left behind
    actor.call(leave_traces, first)
    first.close()
    second = make_env("web:miniwob.click-button", FAST)  # the pooled thread, and its browser, again
    second.reset(seed=0)
    assert second._actor is actor and actor.call(traces, second) == (browser, None, [])
    second.close()


def test_a_process_with_eight_browsers_exits_cleanly() -> None:
    """Browser threads are stopped before Python tears down: with eight left running, the
    interpreter used to crash after the last line (exit 139), failing CI after every test passed."""
    import subprocess
    import sys

    script = """
from studio.agents.scripted import RandomPolicy
from studio.episodes.rollouts import run_parallel
from studio.episodes.runner import EpisodeRunner, RunnerConfig

def job(seed):
    def run(_backend):
        runner = EpisodeRunner("web:miniwob.click-button", RandomPolicy(seed=seed), {"wait": 0.05},
                               config=RunnerConfig(max_steps=2))
        runner.reset(seed=seed)
        return runner.run()
    return run

results = run_parallel([job(seed) for seed in range(8)], None, 8)
print(sum(r.done for r in results))
"""
    ran = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip() == "8", (ran.returncode, ran.stderr[-2000:])
