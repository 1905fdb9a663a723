"""Episodes side by side: lockstep batches give the episodes each would give alone, and nobody hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import make_policy
from studio.errors import StudioError
from studio.models.base import GenerateCall, PrefixSession, SamplingParams
from studio.models.hf import TransformersBackend
from studio.models.lockstep import LockstepPool
from studio.models.scripted import ScriptedBackend
from studio.episodes.rollouts import check_parallel, run_parallel
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.scaling.values import estimate_step_values
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


def sampled(seed: int, tokens: int = 12) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=tokens, seed=seed)


def assert_same_tokens(alone, batched) -> None:
    assert [t.id for t in alone] == [t.id for t in batched]
    assert max((abs(a.logprob - b.logprob) for a, b in zip(alone, batched)), default=0.0) < TOLERANCE
    assert [[x.id for x in a.top] for a in alone] == [[x.id for x in b.top] for b in batched]


def test_generate_many_draws_what_each_call_draws_alone_and_leaves_the_same_caches(tiny) -> None:
    prompts = [[{"role": "user", "content": "walk " * k}] for k in (1, 4, 9, 2)]

    def calls(sessions: list[PrefixSession]) -> list[GenerateCall]:
        # Different lengths, candidates, stop strings and token budgets in one batch.
        return [
            GenerateCall(
                messages,
                n=3 if i == 2 else 1,
                sampling=sampled(i, tokens=6 + 5 * i),
                stop=["e"] if i == 1 else None,
                session=session,
            )
            for i, (messages, session) in enumerate(zip(prompts, sessions))
        ]

    alone_sessions = [PrefixSession() for _ in prompts]
    batched_sessions = [PrefixSession() for _ in prompts]
    for turn in range(3):  # later turns reuse each session's cache, as episode steps do
        alone = [tiny.generate(**call.kwargs()) for call in calls(alone_sessions)]
        batched = tiny.generate_many(calls(batched_sessions))
        for a, b in zip(alone, batched):
            assert not isinstance(b, StudioError)
            assert [g.finish_reason for g in a.generations] == [g.finish_reason for g in b.generations]
            assert [g.text for g in a.generations] == [g.text for g in b.generations]
            for ga, gb in zip(a.generations, b.generations):
                assert_same_tokens(ga.tokens, gb.tokens)
            assert b.cache.prompt_tokens == a.cache.prompt_tokens and b.cache.reused_tokens == a.cache.reused_tokens
        for x, y in zip(alone_sessions, batched_sessions):
            assert x.token_ids == y.token_ids and y.cache.get_seq_length() == len(y.token_ids)
            for kx, ky in zip(x.cache.layers, y.cache.layers):
                assert (kx.keys - ky.keys).abs().max() < TOLERANCE and (kx.values - ky.values).abs().max() < TOLERANCE
        assert any(a.cache.reused_tokens for a in alone) or turn == 0
        prompts = [
            p + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "on " * turn}] for p in prompts
        ]


def react_jobs(seeds: list[int], action_mode: str, candidates: int = 1):
    def job_for(seed: int):
        def job(backend):
            config = ReActConfig(sampling=sampled(seed), action_mode=action_mode, candidates=candidates)
            runner = EpisodeRunner(
                "gridworld", ReActPolicy(backend, config), config=RunnerConfig(max_steps=3 + seed % 3)
            )  # episodes of different lengths: members leave the batch at different times
            runner.reset(seed=seed)
            episode = runner.run()
            pools.append(getattr(backend, "pool", None))
            return episode

        return job

    pools: list = []
    return [job_for(seed) for seed in seeds], pools


def test_calls_joining_a_running_batch_draw_what_they_draw_alone(tiny) -> None:
    """Continuous batching: a call joins after others have decoded for a while (a longer prompt:
    every row gets padded on the left), another leaves early; each draws its tokens alone."""
    prompts = [[{"role": "user", "content": "walk " * k}] for k in (2, 12, 1)]
    budgets = (20, 10, 3)

    def call(i: int, session: PrefixSession) -> GenerateCall:
        return GenerateCall(prompts[i], n=2 if i == 1 else 1, sampling=sampled(i, tokens=budgets[i]), session=session)

    alone = [tiny.generate(**call(i, PrefixSession()).kwargs()) for i in range(3)]
    batcher = tiny.open_batch()
    sessions = [PrefixSession() for _ in range(3)]
    results: dict[int, object] = {}
    order = []

    def run_steps(count: int) -> None:
        for _ in range(count):
            if batcher.busy:
                for done, result in batcher.step():
                    index = next(i for i in range(3) if done.session is sessions[i])
                    results[index] = result
                    order.append(index)

    assert batcher.add(call(0, sessions[0])) is None
    run_steps(4)  # call 0 alone for 4 tokens
    assert batcher.add(call(1, sessions[1])) is None  # longer prompt: pads call 0's rows on the left
    run_steps(2)
    assert batcher.add(call(2, sessions[2])) is None  # 3 tokens: done long before the others
    run_steps(40)
    assert not batcher.busy and order[0] == 2  # the short call left first, the batch went on
    for i in range(3):
        for ga, gb in zip(alone[i].generations, results[i].generations):
            assert ga.text == gb.text and ga.finish_reason == gb.finish_reason
            assert_same_tokens(ga.tokens, gb.tokens)
    again = tiny.generate(**call(0, sessions[0]).kwargs())  # the cache given back is the one a lone call leaves
    assert again.cache.reused_tokens > 0


@pytest.mark.parametrize("action_mode,candidates", [("generate", 1), ("generate", 3), ("score", 1)])
def test_react_episodes_in_lockstep_equal_the_episodes_run_one_by_one(tiny, action_mode, candidates) -> None:
    seeds = [0, 1, 2, 3, 4]
    jobs, _ = react_jobs(seeds, action_mode, candidates)
    alone = run_parallel(jobs, tiny, parallel=1)
    jobs, pools = react_jobs(seeds, action_mode, candidates)
    together = run_parallel(jobs, tiny, parallel=4)
    pool = pools[0]
    assert pool is not None and all(p is pool for p in pools)
    assert pool.widest > 1 and pool.steps > 0, "generate calls were never batched"
    for a, b in zip(alone, together):
        assert a.seed == b.seed and a.length == b.length and a.length == 3 + a.seed % 3
        for sa, sb in zip(a.steps, b.steps):
            assert (sa.action, sa.raw, sa.valid) == (sb.action, sb.raw, sb.valid)
            assert_same_tokens(sa.tokens, sb.tokens)
            assert [c.raw for c in sa.candidates] == [c.raw for c in sb.candidates]
            for ca, cb in zip(sa.candidates, sb.candidates):
                assert_same_tokens(ca.tokens or [], cb.tokens or [])


@pytest.mark.parametrize("policy", ["expert", "random"])
def test_scripted_policies_side_by_side_give_the_same_episodes(policy) -> None:
    def job_for(seed: int):
        def job(backend):
            assert backend is None
            runner = EpisodeRunner(
                "gridworld", make_policy(policy, seed=seed) if policy == "random" else make_policy(policy)
            )
            runner.reset(seed=seed)
            return runner.run()

        return job

    alone = run_parallel([job_for(s) for s in range(6)], None, parallel=1)
    together = run_parallel([job_for(s) for s in range(6)], None, parallel=3)
    assert [[s.action for s in e.steps] for e in alone] == [[s.action for s in e.steps] for e in together]
    assert [e.success for e in alone] == [e.success for e in together]


def test_forks_of_one_step_encode_the_common_history_once(tiny) -> None:
    runner = EpisodeRunner("gridworld", ReActPolicy(tiny, ReActConfig(sampling=sampled(0))))
    runner.reset(seed=5)
    for _ in range(3):
        runner.step()
    episode = runner.episode

    def job_for(index: int):
        def job(backend):
            fork = EpisodeRunner("gridworld", ReActPolicy(backend, ReActConfig(sampling=sampled(10 + index))))
            fork.fork(episode, 2)
            return fork.step()

        return job

    steps = run_parallel([job_for(i) for i in range(4)], tiny, parallel=4)
    caches = [step.extra["cache"] for step in steps]
    prompt = caches[0]["prompt_tokens"]
    assert prompt > 200 and all(c["prompt_tokens"] == prompt for c in caches)
    # One fork encodes the history; the other three copy it from that fork's cache.
    assert sorted(c["shared_tokens"] > prompt // 2 for c in caches) == [False, True, True, True]
    alone = [job_for(i)(tiny) for i in range(4)]
    for a, b in zip(alone, steps):
        assert a.raw == b.raw and a.extra["cache"]["shared_tokens"] == 0
        assert_same_tokens(a.tokens, b.tokens)


def test_values_with_a_model_are_the_same_side_by_side(tiny) -> None:
    runner = EpisodeRunner("gridworld", make_policy("expert"))
    runner.reset(seed=3)
    runner.step()
    episode = runner.episode
    factory = lambda i, backend: ReActPolicy(backend, ReActConfig(sampling=sampled(i, tokens=8)))  # noqa: E731
    common = dict(rollout_policy="react:tiny", rollouts=3, horizon=2, model=tiny)
    alone = estimate_step_values(episode, 0, factory, parallel=1, **common)
    progress: list[tuple[int, int]] = []
    together = estimate_step_values(
        episode, 0, factory, parallel=3, progress=lambda d, t: progress.append((d, t)), **common
    )
    assert [v.to_dict() for v in alone] == [v.to_dict() for v in together]
    assert [done for done, _ in progress] == [1, 2, 3] and {total for _, total in progress} == {3}


def test_an_error_reaches_its_own_caller_only_and_nobody_hangs(tiny) -> None:
    def job_for(index: int):
        def job(backend):
            if index == 1:
                raise StudioError("environment broke")
            messages = [{"role": "user", "content": "x" * (3 if index != 2 else 20_000)}]  # 2: over the context
            return backend.generate(messages, sampling=sampled(index, tokens=4), session=PrefixSession())

        return job

    outcomes = run_parallel([job_for(i) for i in range(4)], tiny, parallel=4)
    assert isinstance(outcomes[1], StudioError) and str(outcomes[1]) == "environment broke"
    assert not isinstance(outcomes[0], StudioError) and not isinstance(outcomes[3], StudioError)
    assert isinstance(outcomes[2], StudioError) or len(outcomes[2].generations) == 1


def test_a_failing_batch_wakes_every_waiting_member() -> None:
    backend = ScriptedBackend(["Thought: a\nAction: go north"])
    backend.capabilities = type(backend.capabilities)(**{**backend.capabilities.to_dict(), "batched_generate": True})
    backend.generate_many = lambda calls: (_ for _ in ()).throw(RuntimeError("device lost"))  # type: ignore[method-assign]
    pool = LockstepPool(backend)
    members = [pool.member() for _ in range(3)]
    errors: list[str] = []

    def call(member) -> None:
        try:
            member.generate([{"role": "user", "content": "hi"}])
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            member.leave()

    threads = [threading.Thread(target=call, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads) and errors == ["device lost"] * 3
    assert pool.calls == 3


def test_a_served_model_is_called_concurrently_without_a_batch() -> None:
    backend = ScriptedBackend(["Thought: a\nAction: go north"])
    assert not backend.capabilities.batched_generate
    jobs = [lambda b: b.generate([{"role": "user", "content": "hi"}]).generations[0].text for _ in range(3)]
    assert run_parallel(jobs, backend, parallel=3) == ["Thought: a\nAction: go north"] * 3


def test_parallel_must_be_a_sensible_whole_number() -> None:
    for bad in (0, -1, 1.5, True, "4", 10_000):
        with pytest.raises(StudioError, match="Parallel episodes must be a whole number"):
            check_parallel(bad)
    assert check_parallel(8) == 8


def test_cli_run_side_by_side_prints_in_seed_order_and_stores_every_episode(tmp_path) -> None:
    db = tmp_path / "s.db"
    cli = [sys.executable, str(ROOT / "app.py")]
    run = subprocess.run(
        [
            *cli,
            "run",
            "--env",
            "gridworld",
            "--episodes",
            "5",
            "--parallel",
            "3",
            "--seed",
            "7",
            "--json",
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["seed"] for line in lines] == [7, 8, 9, 10, 11] and all(line["success"] for line in lines)
    with open_store(db) as store:
        stored = [store.episodes.get(line["episode_id"]) for line in lines]
    assert [e.seed for e in stored] == [7, 8, 9, 10, 11] and all(
        e.length == line["steps"] for e, line in zip(stored, lines)
    )
    bad = subprocess.run([*cli, "run", "--env", "gridworld", "--parallel", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--parallel" in bad.stderr


def test_the_listener_hears_every_job_in_the_callers_context() -> None:
    import contextvars

    request = contextvars.ContextVar("request", default=None)
    request.set("browser tab 1")
    heard: list[tuple[int, str | None]] = []
    jobs = [lambda _b, i=i: i * i for i in range(6)]
    assert run_parallel(jobs, None, parallel=3, on_done=lambda i, _o: heard.append((i, request.get()))) == [
        0, 1, 4, 9, 16, 25
    ]  # fmt: skip
    assert sorted(heard) == [(i, "browser tab 1") for i in range(6)]
