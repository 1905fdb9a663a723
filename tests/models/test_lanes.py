"""Lanes: a pool's generate and score calls packed into one forward per step give what each call
gives alone (tokens, logprobs, scores, caches), share long prefixes, and fail cleanly."""

from __future__ import annotations

import pytest
import torch

from studio.models.base import GenerateCall, PrefixSession, SamplingParams, ScoreCall
from studio.models.hf import TransformersBackend, TransformersBatcher
from studio.models.hf_lanes import LaneBatcher, lanes_supported
from tests.support.tiny_models import tiny_gpt2, tiny_llama, tiny_tokenizer

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


def sampled(seed: int, tokens: int = 10) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=tokens, seed=seed)


def drain(batcher) -> dict[int, object]:
    """Step until every call is answered; results by id(call)."""
    answers: dict[int, object] = {}
    while batcher.busy:
        answers.update((id(call), result) for call, result in batcher.step())
    return answers


def assert_same_generation(alone, packed) -> None:
    assert [g.text for g in alone.generations] == [g.text for g in packed.generations]
    assert [g.finish_reason for g in alone.generations] == [g.finish_reason for g in packed.generations]
    for ga, gb in zip(alone.generations, packed.generations):
        assert [t.id for t in ga.tokens] == [t.id for t in gb.tokens]
        assert max((abs(a.logprob - b.logprob) for a, b in zip(ga.tokens, gb.tokens)), default=0.0) < TOLERANCE
        assert [[x.id for x in a.top] for a in ga.tokens] == [[x.id for x in b.top] for b in gb.tokens]
    assert (alone.cache.prompt_tokens, alone.cache.reused_tokens) == (
        packed.cache.prompt_tokens,
        packed.cache.reused_tokens,
    )


def assert_same_scores(alone, packed) -> None:
    assert alone.tokens == packed.tokens
    for ra, rb in zip(alone.token_logprobs, packed.token_logprobs):
        assert len(ra) == len(rb) and max(abs(a - b) for a, b in zip(ra, rb)) < TOLERANCE
    for ea, eb in zip(alone.entropies, packed.entropies):
        assert max(abs(a - b) for a, b in zip(ea, eb)) < TOLERANCE
    assert (alone.cache.prompt_tokens, alone.cache.reused_tokens) == (
        packed.cache.prompt_tokens,
        packed.cache.reused_tokens,
    )


def test_only_packable_models_get_lanes(tiny) -> None:
    tokenizer = tiny_tokenizer()
    gpt2 = TransformersBackend(tiny_gpt2(tokenizer), tokenizer)
    assert lanes_supported(tiny) and not lanes_supported(gpt2)
    assert isinstance(tiny.open_batch(pooled=True), LaneBatcher)
    assert isinstance(tiny.open_batch(), TransformersBatcher)  # generate_many keeps the continuous batch
    assert isinstance(gpt2.open_batch(pooled=True), TransformersBatcher)


def test_generate_and_score_calls_packed_in_one_forward_equal_each_call_alone(tiny) -> None:
    """Three turns of three callers (a sampled reply, a score of two continuations, a reply with a
    stop string): each turn's calls share forwards; answers and the caches left equal the lone ones."""
    prompts = [[{"role": "user", "content": "walk " * k}] for k in (2, 7, 4)]
    alone_sessions = [PrefixSession() for _ in prompts]
    packed_sessions = [PrefixSession() for _ in prompts]
    batcher = tiny.open_batch(pooled=True)
    assert isinstance(batcher, LaneBatcher)

    def calls(sessions: list[PrefixSession], turn: int):
        return (
            GenerateCall(prompts[0], sampling=sampled(turn), session=sessions[0]),
            ScoreCall(prompts[1], ["go north", "stop"], session=sessions[1], assistant_prefix="I", end_with_eos=True),
            GenerateCall(prompts[2], sampling=sampled(10 + turn, tokens=14), stop=["a"], session=sessions[2]),
        )

    for turn in range(3):
        first, score, last = calls(alone_sessions, turn)
        alone = (tiny.generate(**first.kwargs()), tiny.score(**score.kwargs()), tiny.generate(**last.kwargs()))
        first, score, last = calls(packed_sessions, turn)
        forwards = batcher.forwards
        assert batcher.add(first) is None and batcher.score(score) is None and batcher.add(last) is None
        answers = drain(batcher)
        assert_same_generation(alone[0], answers[id(first)])
        assert_same_scores(alone[1], answers[id(score)])
        assert_same_generation(alone[2], answers[id(last)])
        # The score rode in the first forward with both prompts; then one forward per further token
        # (an end-of-sequence or stop token is decoded, then dropped from the generation).
        longest = max(
            len(g.tokens) + (g.finish_reason in ("eos", "stop"))
            for g in (alone[0].generations[0], alone[2].generations[0])
        )
        assert batcher.forwards - forwards <= longest
        assert turn == 0 or answers[id(first)].cache.reused_tokens > 0  # the slot kept the last turn
        prompts = [p + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "on"}] for p in prompts]

    batcher.release(packed_sessions)  # copied out of the slots: plain caches a lone call can reuse
    for x, y in zip(alone_sessions, packed_sessions):
        assert x.token_ids == y.token_ids and y.cache.get_seq_length() == len(y.token_ids)
        for kx, ky in zip(x.cache.layers, y.cache.layers):
            assert (kx.keys - ky.keys).abs().max() < TOLERANCE and (kx.values - ky.values).abs().max() < TOLERANCE
    again = tiny.generate(prompts[0], sampling=sampled(9), session=packed_sessions[0])
    assert again.cache.reused_tokens > 0
    assert all(session is None for session in batcher.store.sessions)  # every slot free again


def test_a_prompt_sharing_a_long_prefix_with_a_peer_waits_one_forward_and_copies_it(tiny) -> None:
    history = "look around the room and " * 12
    prompts = [[{"role": "user", "content": history + end}] for end in ("go", "stop")]
    sessions = [PrefixSession(), PrefixSession()]
    peers: list[PrefixSession] = []
    for session in sessions:
        session.peers = peers
        peers.append(session)
    batcher = tiny.open_batch(pooled=True)
    calls = [GenerateCall(p, sampling=sampled(i), session=s) for i, (p, s) in enumerate(zip(prompts, sessions))]
    for call in calls:
        batcher.add(call)
    batcher.step()
    assert batcher.tokens["prompt"] < len(tiny.encode(prompts[1])[0]) + len(tiny.encode(prompts[0])[0]) // 4
    answers = drain(batcher)
    copied = answers[id(calls[1])].cache
    assert copied.shared_tokens > len(history) // 2 and copied.encoded_tokens < len(history) // 4
    for call in calls:
        alone = tiny.generate(**GenerateCall(call.messages, sampling=call.sampling, session=PrefixSession()).kwargs())
        assert [t.id for t in alone.generations[0].tokens] == [t.id for t in answers[id(call)].generations[0].tokens]


def test_candidates_decode_as_alone_inside_the_lanes(tiny) -> None:
    session = PrefixSession()
    batcher = tiny.open_batch(pooled=True)
    batcher.add(GenerateCall([{"role": "user", "content": "hi"}], sampling=sampled(1), session=session))
    drain(batcher)  # the session now lives in a slot
    call = GenerateCall([{"role": "user", "content": "hi there"}], n=3, sampling=sampled(2), session=session)
    result = batcher.add(call)  # candidates: answered at once, from a cache copied out of the slot
    alone = tiny.generate(**GenerateCall(call.messages, n=3, sampling=sampled(2), session=PrefixSession()).kwargs())
    assert result is not None and [g.text for g in result.generations] == [g.text for g in alone.generations]
    assert batcher.store.slot_of(session) is None and session.cache is not None


def test_a_failed_forward_answers_every_call_and_resets_their_sessions(tiny, monkeypatch) -> None:
    batcher = tiny.open_batch(pooled=True)
    sessions = [PrefixSession(), PrefixSession()]
    calls = [
        GenerateCall([{"role": "user", "content": "go"}], sampling=sampled(0), session=sessions[0]),
        ScoreCall([{"role": "user", "content": "go"}], ["x"], session=sessions[1]),
    ]
    batcher.add(calls[0])
    batcher.score(calls[1])
    monkeypatch.setattr(batcher.store, "update", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("device lost")))
    with pytest.raises(RuntimeError, match="device lost"):
        batcher.step()
    assert {id(c) for c in batcher.abort()} == {id(c) for c in calls}
    assert not batcher.busy and all(s.cache is None and s.token_ids == [] for s in sessions)
    monkeypatch.undo()
    batcher.add(calls[0])  # the batcher works on after a failure
    assert drain(batcher)[id(calls[0])].generations[0].tokens
    assert torch.is_tensor(batcher.store.keys[0])
