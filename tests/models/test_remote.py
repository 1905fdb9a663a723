"""The remote backend against a real vLLM server (its CPU build, in .venv-vllm, started by the
fixture on the default model's converted folder): the same numbers as the in-process backend,
candidates, score mode, ReAct episodes stored, concurrency without a device lock, and every
failure as one line.

If vLLM cannot start, these tests fail with the reason (its log), never skip.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.errors import StudioError
from studio.models.access import ModelAccess
from studio.models.base import SamplingParams
from studio.models.engines import EngineServer, free_port, start_vllm
from studio.models.registry import ModelRegistry
from studio.models.remote import OpenAIBackend, parse_server_url
from studio.models.resolve import resolve_default
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Episode
from agent_studio.storage import open_store

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
#: |logprob(server) - logprob(in-process)| allowed: both run float32 on the CPU, through different
#: kernels (vLLM's fused CPU attention vs torch's sdpa); measured at most 2e-5 on these prompts.
TOLERANCE = 1e-3

CHAT = [
    {"role": "system", "content": "You are an agent in a grid world. Answer with Thought: and Action: lines."},
    {
        "role": "user",
        "content": "You are at (1,1). The goal is at (3,1). Valid actions: go north, go south, go east, go west.",
    },
]


@pytest.fixture(scope="module")
def server() -> EngineServer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_default().path
    with start_vllm(folder, served_name="smollm2", threads=2) as running:
        yield running


@pytest.fixture(scope="module")
def remote(server: EngineServer) -> OpenAIBackend:
    backend = ModelRegistry().load(server.url)
    assert isinstance(backend, OpenAIBackend)
    return backend


@pytest.fixture(scope="module")
def local():
    return ModelRegistry().load("default", device="cpu")


def test_greedy_tokens_and_logprobs_equal_the_in_process_backend(remote, local) -> None:
    sampling = SamplingParams(temperature=0.0, max_new_tokens=24)
    ours = local.generate(CHAT, sampling=sampling).generations[0]
    theirs = remote.generate(CHAT, sampling=sampling).generations[0]
    assert [t.id for t in theirs.tokens] == [t.id for t in ours.tokens] and theirs.text == ours.text
    assert max(abs(a.logprob - b.logprob) for a, b in zip(ours.tokens, theirs.tokens)) < TOLERANCE
    for a, b in zip(ours.tokens, theirs.tokens):  # the engine's top 5 are the model's top 5
        assert len(b.top) == 5 and b.top[0].id == a.top[0].id
        assert abs(b.top[0].logprob - a.top[0].logprob) < TOLERANCE
        assert b.entropy is None  # a server reports the top k only: no made-up entropy
    assert "".join(t.text for t in theirs.tokens) == theirs.text


def test_score_equals_the_in_process_score(remote, local) -> None:
    actions = ["go north", "go south", "go east", "go west"]
    ours = local.score(CHAT, actions, assistant_prefix="Thought: I go.\nAction: ")
    theirs = remote.score(CHAT, actions, assistant_prefix="Thought: I go.\nAction: ")
    assert theirs.tokens == ours.tokens and theirs.texts == ours.texts
    for a, b in zip(ours.token_logprobs, theirs.token_logprobs):
        assert max(abs(x - y) for x, y in zip(a, b)) < TOLERANCE
    assert max(range(4), key=lambda i: theirs.totals[i]) == max(range(4), key=lambda i: ours.totals[i])
    assert all(len(top) == 5 for row in theirs.alternatives for top in row)


def test_cross_scores_and_sweeps_work_through_the_server(remote, local, tmp_path: Path) -> None:
    """Model B served by vLLM scores model A's episode as the in-process model does; a sweep's model
    cells run through the server as concurrent requests and store the episodes the local model plays."""
    from studio.evaluation.crossscore import cross_score
    from studio.evaluation.sweep import SweepSpec, run_sweep

    policy = ReActPolicy(local, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=40)))
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=2))
    runner.reset(seed=1)
    episode = runner.run()
    served, here = cross_score(episode, remote), cross_score(episode, local)
    for theirs, ours in zip(served, here, strict=True):
        assert [t.id for t in theirs.tokens] == [t.id for t in ours.tokens]
        assert max(abs(a.logprob - b.logprob) for a, b in zip(theirs.tokens, ours.tokens)) < TOLERANCE
        assert theirs.preferred == ours.preferred and abs(theirs.difference) < 0.01  # the same model as A
    spec = SweepSpec.build(["served"], ["gridworld"], "0-1", {"max_steps": 2, "max_new_tokens": 40})
    with open_store(tmp_path / "sweep.db") as store:
        record = store.sweeps.create(spec)
        outcome = run_sweep(spec, record.id, [store.episodes.sink()], lambda name: remote, parallel=2)
        assert outcome.completed == 2 and not outcome.failed
        through_server = store.sweeps.episodes_of(record.id)
    for played in through_server:
        alone = EpisodeRunner(
            "gridworld",
            ReActPolicy(local, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=40))),
            config=RunnerConfig(max_steps=2),
        )
        alone.reset(seed=played.seed)
        assert [s.action for s in played.steps] == [s.action for s in alone.run().steps]


def test_seeded_candidates_in_one_request(remote) -> None:
    sampling = SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
    first = remote.generate(CHAT, n=3, sampling=sampling)
    again = remote.generate(CHAT, n=3, sampling=sampling)
    texts = [g.text for g in first.generations]
    assert texts == [g.text for g in again.generations]  # the per-step seed reproduces the candidates
    assert len(set(texts)) == 3  # and each candidate has its own
    for generation in first.generations:
        assert "".join(t.text for t in generation.tokens) == generation.text
        assert generation.finish_reason in ("length", "eos")


def test_the_engines_prefix_cache_is_recorded(remote) -> None:
    """The engine caches whole blocks of a prompt it has seen (an agent's prompt grows by a step):
    the second request reports the cached tokens, and the result records them as the engine's."""
    long_chat = [{"role": "system", "content": "Rules of the grid world. " * 80}, *CHAT[1:]]
    sampling = SamplingParams(temperature=0.0, max_new_tokens=2)
    remote.generate(long_chat, sampling=sampling)
    again = remote.generate(long_chat, sampling=sampling)
    assert again.cache.source == "engine" and 0 < again.cache.reused_tokens <= again.cache.prompt_tokens


def test_stop_strings_cut_like_the_in_process_backend(remote, local) -> None:
    sampling = SamplingParams(temperature=0.0, max_new_tokens=40)
    ours = local.generate(CHAT, sampling=sampling, stop=["."]).generations[0]
    theirs = remote.generate(CHAT, sampling=sampling, stop=["."]).generations[0]
    assert theirs.text == ours.text and theirs.finish_reason == ours.finish_reason == "stop"


def test_stop_patterns_end_the_stream_like_the_in_process_backend(remote, local) -> None:
    """Engines take stop strings only: a pattern is applied here as the tokens stream, and the
    stream is closed at its match (the engine stops generating); the text equals in-process's."""
    sampling = SamplingParams(temperature=0.0, max_new_tokens=60, ignore_eos=True)
    full = local.generate(CHAT, sampling=sampling).generations[0].text
    pattern = re.compile(re.escape(full[8:12]) + "(" + re.escape(full[12]) + ")")
    ours = local.generate(CHAT, sampling=sampling, stop=[pattern]).generations[0]
    streamed: list = []
    theirs = remote.generate(
        CHAT, sampling=sampling, stop=[pattern], on_token=lambda row, token: streamed.append(token)
    ).generations[0]
    assert theirs.text == ours.text and theirs.finish_reason == ours.finish_reason == "stop"
    assert len(streamed) < 30  # the stream ended at the match, not after the 60 tokens asked for


def test_stop_interrupts_a_generation(remote) -> None:
    seen: list[int] = []
    result = remote.generate(
        CHAT,
        sampling=SamplingParams(temperature=0.0, max_new_tokens=200, ignore_eos=True),
        on_token=lambda row, token: seen.append(token.id),
        should_stop=lambda: len(seen) >= 3,
    )
    generation = result.generations[0]
    assert generation.finish_reason == "interrupted" and 3 <= len(generation.tokens) < 200


def test_two_sessions_generate_at_once(remote) -> None:
    """No device lock: the second request runs while the first is still streaming (the engine
    batches them). With a lock, each would wait for the other's token and both would time out."""
    both_streaming = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def session() -> None:
        met = []

        def on_token(row, token) -> None:
            if not met:
                met.append(True)
                both_streaming.wait()  # holds this request open until the other one streams too

        try:
            remote.generate(
                CHAT, sampling=SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True), on_token=on_token
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not both_streaming.broken
    assert remote.capabilities.local_device is False


def test_react_episodes_in_generate_and_score_mode_are_stored(remote, tmp_path: Path) -> None:
    store = open_store(tmp_path / "remote.db").episodes
    generate = ReActPolicy(remote, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=40)))
    runner = EpisodeRunner("gridworld", generate, config=RunnerConfig(max_steps=2), sinks=[store.sink()])
    runner.reset(seed=0)
    steps = [runner.step() for _ in range(2)]
    assert all(step.valid and step.tokens for step in steps)
    assert all(t.top for step in steps for t in step.tokens)  # top alternatives on every stored token
    stored = store.get(runner.episode.id)
    assert stored.length == 2 and stored.model["id"] == remote.card.id and stored.model["engine"] == "vLLM"
    assert stored.steps[1].tokens[0].top == steps[1].tokens[0].top

    score = ReActPolicy(remote, ReActConfig(action_mode="score", sampling=SamplingParams(max_new_tokens=24)))
    runner = EpisodeRunner("gridworld", score, config=RunnerConfig(max_steps=1))
    runner.reset(seed=0)
    step = runner.step()
    assert step.valid and step.action in step.action_logprobs and len(step.action_logprobs) >= 2
    assert 0 < step.extra["chosen_action_probability"] <= 1


class Relay:
    """A TCP relay to the server that can be cut: the network between the studio and the engine."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone would not on Linux
        self.listener.close()
        for end in self.sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()


def test_a_failed_request_leaves_no_partial_step(server, tmp_path: Path) -> None:
    """The server goes away mid-episode: the step fails in one line and nothing of it is recorded."""
    relay = Relay(int(server.url.split(":")[-1].split("/")[0]))
    backend = ModelRegistry().load(f"http://127.0.0.1:{relay.port}/v1")
    store = open_store(tmp_path / "down.db").episodes
    policy = ReActPolicy(backend, ReActConfig(sampling=SamplingParams(max_new_tokens=16)))
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=5), sinks=[store.sink()])
    runner.reset(seed=0)
    runner.step()
    relay.cut()
    with pytest.raises(StudioError, match=r"^Cannot reach http://127\.0\.0\.1:\d+/v1: .*is the server running\?"):
        runner.step()
    assert runner.episode.length == 1 and store.get(runner.episode.id).length == 1


def test_errors_are_one_line(server) -> None:
    registry = ModelRegistry()
    port = free_port()  # nobody listens there
    for name, message in [
        (f"http://127.0.0.1:{port}/v1", "Cannot reach"),
        (server.url + "#not-served", r"does not serve 'not-served' \(it serves: smollm2\)"),
        (server.url.removesuffix("/v1") + "/nothing", "answered HTTP 404"),
    ]:
        with pytest.raises(StudioError, match=message) as caught:
            registry.load(name)
        assert "\n" not in str(caught.value)
    backend = registry.load(server.url)
    too_long = [{"role": "user", "content": "go " * 9000}]
    with pytest.raises(StudioError, match="answered HTTP 400: .*maximum context length|max_model_len") as caught:
        backend.generate(too_long, sampling=SamplingParams(max_new_tokens=4))
    assert "\n" not in str(caught.value)
    # A screenshot for a served model: refused in one line (the capability table says so), nothing sent.
    with pytest.raises(StudioError, match="takes text only \\(its config has no vision tower\\)") as caught:
        backend.generate(CHAT, images=[np.zeros((8, 8, 3), dtype=np.uint8)], sampling=SamplingParams(max_new_tokens=4))
    assert "\n" not in str(caught.value)


def test_a_server_that_never_answers_times_out_in_one_line() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        from studio.models.remote import ServerClient

        client = ServerClient(parse_server_url(f"http://127.0.0.1:{silent.getsockname()[1]}/v1"), timeout=1.0)
        with pytest.raises(StudioError, match=r"did not answer within 1 s"):
            client.get("/models")
        client.close()


def test_browser_names_reach_only_servers_the_operator_listed(server) -> None:
    registry = ModelRegistry()
    closed = ModelAccess()
    with pytest.raises(StudioError, match="servers in the browser is off"):
        registry.load(server.url, access=closed)
    listed = ModelAccess(servers=(server.url + "/",))  # the operator's spelling does not matter
    assert registry.load(server.url, access=listed).card.kind == "served"
    with pytest.raises(StudioError, match="is not a server the studio allows"):
        registry.load("http://169.254.169.254/v1", access=listed)


def test_models_probe_prints_what_the_server_supports(server) -> None:
    result = subprocess.run(
        [sys.executable, "app.py", "models", "--probe", server.url, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["engine"] == "vLLM" and report["model"] == "smollm2"
    assert report["models"][0]["max_model_len"] == 8192 and report["tokenizer"] == "found here"
    assert report["supports"]["logprobs"] is True and report["supports"]["scoring"] is True
    assert report["supports"]["attention"].startswith("no")


def test_server_urls_are_parsed_strictly() -> None:
    assert parse_server_url("http://h:8000").base == "http://h:8000/v1"
    assert parse_server_url("https://h/v1/#org/model").model == "org/model"
    for bad in ("ftp://h/v1", "http://", "http://u:p@h/v1", "http://h/v1?x=1", "http://h:99999/v1"):
        with pytest.raises(StudioError):
            parse_server_url(bad)


def test_an_episode_from_the_server_round_trips(remote, tmp_path: Path) -> None:
    policy = ReActPolicy(remote, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=24)))
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=1))
    runner.reset(seed=1)
    runner.step()
    data = json.loads(json.dumps(runner.episode.to_dict()))
    assert Episode.from_dict(data).to_dict() == runner.episode.to_dict()


@pytest.mark.browser
def test_a_served_model_in_slot_b_in_the_browser(server, tmp_path: Path) -> None:
    """Slot A local (the scripted model), slot B the server: step with B, hover a token for its top
    alternatives, and the attention panel says B's attention is not available."""
    from tests.support.live_server import studio_in_chromium

    with studio_in_chromium(tmp_path / "studio.db", args=("--allow-server", server.url)) as studio:
        page = studio["browser"].new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
        page.get_by_role("tab", name="Models").click()
        page.locator("#as-model-b input, #as-model-b textarea").first.fill(server.url)
        page.click("#as-load-b")
        page.locator("#as-model-message-b", has_text="on vLLM server").wait_for(timeout=120_000)
        card = page.inner_text("#as-card-b")
        assert "smollm2" in card and "vLLM" in card and "attention" in card
        assert server.url in page.inner_text("#as-model-access")

        page.get_by_role("tab", name="Episode", exact=True).click()
        page.locator("#as-policy input").click()
        page.get_by_role("option", name="ReAct with model B").click()
        page.click("#as-reset")
        page.locator("#as-timeline .as-episode-head", has_text=server.url).wait_for(timeout=60_000)
        page.click("#as-step")
        page.wait_for_function("document.querySelectorAll('#as-timeline .as-step').length === 1", timeout=120_000)
        token = page.locator("#as-trace .as-tok:not(.as-tok-forced)").first
        token.hover()
        tip = page.evaluate(
            "el => getComputedStyle(el, '::after').content", token.element_handle()
        )  # what the hover shows
        assert "most likely here:" in tip and "top-5 mass=" in tip and "entropy over the top 5" in tip

        page.get_by_text("Attention: what the model looked at").click()
        page.locator("#as-attention").get_by_label("B", exact=True).check()
        page.click("#as-attention-show")
        page.locator("#as-attention .as-message", has_text="not available from a remote engine").wait_for(
            timeout=30_000
        )
        page.screenshot(path=str(tmp_path / "served-slot-b.png"), full_page=True)
        page.close()


def test_serve_engine_vllm_starts_the_engine_and_stops_it_with_the_studio(tmp_path: Path) -> None:
    """``serve --engine vllm``: the studio starts vLLM on its model, answers with it as model A,
    and a SIGTERM to the studio ends vLLM too (no engine left behind)."""
    import re
    import time
    import urllib.request

    import httpx

    from tests.support.live_server import running_studio, server_log

    with running_studio("--engine", "vllm", "--db", str(tmp_path / "s.db"), timeout=300) as url:
        log = server_log(url)
        engine = re.search(r"vLLM ready at (http://127\.0\.0\.1:\d+/v1)", log)
        assert engine, log
        assert "did not load" not in log  # model A is the engine's model
        assert httpx.get(engine.group(1).removesuffix("/v1") + "/health", timeout=5).status_code == 200
        urllib.request.urlopen(url, timeout=10).close()
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(engine.group(1).removesuffix("/v1") + "/health", timeout=2)
        except httpx.HTTPError:
            return  # the engine is gone
        time.sleep(1)
    raise AssertionError(f"vLLM still answers after the studio stopped:\n{server_log(url)}")


def test_replicas_share_a_sweep_each_step_names_its_replica_and_a_dead_one_is_skipped(
    server, remote, tmp_path: Path
) -> None:
    """Three replicas of one model: the server under two names (two live replicas) and a port nothing
    listens on. A sweep's concurrent requests go to both live ones, never the dead one; the episodes are
    the ones the single server plays."""
    from studio.evaluation.sweep import SweepSpec, run_sweep
    from studio.models.replicas import ReplicaPool

    live = [server.url, server.url.replace("127.0.0.1", "localhost")]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = ModelRegistry().load(",".join([live[0], dead, live[1]]))
    assert isinstance(backend, OpenAIBackend) and isinstance(backend.client, ReplicaPool)
    bases = [parse_server_url(url).base for url in live]
    status = {row["base"]: row for row in backend.client.status()}
    assert status[parse_server_url(dead).base]["out"] and status[parse_server_url(dead).base]["failures"] == 1
    spec = SweepSpec.build(["served"], ["gridworld"], "0-3", {"max_steps": 2, "max_new_tokens": 40})
    with open_store(tmp_path / "replicas.db") as store:
        record = store.sweeps.create(spec)
        outcome = run_sweep(spec, record.id, [store.episodes.sink()], lambda name: backend, parallel=4)
        assert outcome.completed == 4 and not outcome.failed
        episodes = store.sweeps.episodes_of(record.id)
    answered = [step.extra["served_by"] for episode in episodes for step in episode.steps]
    assert set(answered) == set(bases), answered  # both live replicas served, the dead one never
    single = ModelRegistry().load(server.url)
    for played in episodes:
        alone = EpisodeRunner("gridworld", ReActPolicy(single, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=40))), config=RunnerConfig(max_steps=2))  # fmt: skip
        alone.reset(seed=played.seed)
        assert [s.action for s in played.steps] == [s.action for s in alone.run().steps]


def test_a_replica_that_dies_is_taken_out_and_tried_again_later(server) -> None:
    """A replica that stops answering mid-run: the next requests go to the other; after the retry time
    it is asked again (here it answers again: it was the same server under another name)."""
    from studio.models.replicas import ReplicaPool
    from studio.models.server_client import ServerClient

    now = [0.0]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    pool = ReplicaPool(
        [ServerClient(parse_server_url(dead)), ServerClient(parse_server_url(server.url))],
        retry_after=30,
        clock=lambda: now[0],
    )
    seen: list[str] = []
    for _ in range(3):
        assert pool.get("/models")["data"][0]["id"] == "smollm2"
    events = list(
        pool.stream(
            "/completions",
            {"model": "smollm2", "prompt": "Hi", "max_tokens": 2, "stream": True},
            lambda: False,
            seen.append,
        )
    )
    assert events and seen == [parse_server_url(server.url).base]
    rows = {row["base"]: row for row in pool.status()}
    assert rows[parse_server_url(dead).base]["failures"] == 1  # tried once, then left out
    now[0] = 31.0  # past the retry time: asked again first (fewest in flight, its turn), fails, left out again
    for _ in range(2):  # ties are taken in turn: one of two requests asks it first
        pool.get("/models")
    assert {row["base"]: row for row in pool.status()}[parse_server_url(dead).base]["failures"] == 2
    with pytest.raises(StudioError, match="No replica of 1 answered"):
        ReplicaPool([ServerClient(parse_server_url(dead))]).get("/models")
    with pytest.raises(StudioError, match="answered HTTP 4"):  # a refused request is not sent elsewhere
        pool.post("/completions", {"model": "no-such-model", "prompt": "Hi"})
