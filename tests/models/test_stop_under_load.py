"""Stop takes effect within a token even under load: a step waiting for the device while another session
decodes on it gives up at once (it took 22.7 s, the length of the other session's output)."""

from __future__ import annotations

import threading
import time

import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.errors import Interrupted
from studio.models.base import SamplingParams, stopping
from studio.models.hf import TransformersBackend
from studio.episodes.runner import EpisodeRunner
from tests.support.tiny_models import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


def _busy(backend: TransformersBackend, seconds: float) -> threading.Thread:
    """Another session decoding for about ``seconds`` (it holds the device lock all along)."""
    started = threading.Event()

    def decode() -> None:
        sampling = SamplingParams(max_new_tokens=4000, ignore_eos=True)
        deadline = time.perf_counter() + seconds

        def stop_when_due() -> bool:
            started.set()
            return time.perf_counter() > deadline

        backend.generate([{"role": "user", "content": "count"}], sampling=sampling, should_stop=stop_when_due)

    thread = threading.Thread(target=decode)
    thread.start()
    assert started.wait(30)
    return thread


@pytest.mark.parametrize("mode", ["generate", "score"])
def test_stop_ends_a_step_waiting_for_a_busy_device_at_once(backend: TransformersBackend, mode: str) -> None:
    other = _busy(backend, seconds=6.0)
    try:
        runner = EpisodeRunner("gridworld", ReActPolicy(backend, ReActConfig(action_mode=mode)))
        runner.reset(seed=0)
        outcome: dict[str, object] = {}

        def step() -> None:
            try:
                runner.step()
                outcome["result"] = "stepped"
            except Interrupted as exc:
                outcome["result"] = exc
            outcome["at"] = time.perf_counter()

        stepping = threading.Thread(target=step)
        stepping.start()
        time.sleep(0.5)  # it is waiting for the device now
        assert "result" not in outcome
        pressed = time.perf_counter()
        runner.stop()
        stepping.join(10)
        assert isinstance(outcome["result"], Interrupted) and runner.episode.length == 0  # nothing was stepped
        assert outcome["at"] - pressed < 0.5, f"Stop took {outcome['at'] - pressed:.2f} s"  # type: ignore[operator]
    finally:
        other.join(30)


def test_a_score_call_waiting_for_the_device_gives_up_on_the_steps_stop(backend: TransformersBackend) -> None:
    other = _busy(backend, seconds=4.0)
    pressed = threading.Event()
    try:
        threading.Timer(0.3, pressed.set).start()
        started = time.perf_counter()
        with stopping(pressed.is_set), pytest.raises(Interrupted):
            backend.score([{"role": "user", "content": "Act."}], ["go north", "go south"])
        assert time.perf_counter() - started < 0.8
    finally:
        other.join(30)
    # Nobody waiting, nothing pressed: it scores as ever.
    assert len(backend.score([{"role": "user", "content": "Act."}], ["go north"]).totals) == 1
