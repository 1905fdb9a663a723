"""The transformers backend's forward passes: prefill with prefix reuse, the decode loop, packed
candidates and one-pass scoring (:mod:`studio.models.hf` says why each is shaped as it is).

Functions here take the loaded :class:`~studio.models.hf.TransformersBackend` (its model,
tokenizer, device, dtype and eos ids); the caller holds its device lock.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import numpy as np
import torch

from studio.models.base import (
    CacheStats,
    Generation,
    GenerateResult,
    PrefixSession,
    SamplingParams,
    ScoreResult,
    TokenListener,
)
from studio.models.tokens import TokenTexts, stop_cut
from studio.trace import TokenAlternative, TokenInfo


def _common_prefix(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def _image_key(image: np.ndarray) -> str:
    array = np.ascontiguousarray(image)
    return hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()


def _crop_to(cache: Any, length: int) -> bool:
    """Cut ``cache`` back to ``length`` tokens; False when this cache cannot be cut."""
    remove = cache.get_seq_length() - length
    if remove <= 0:
        return True
    try:
        cache.crop(-remove)
    except (RuntimeError, ValueError):  # e.g. sliding-window layers past their window
        return False
    return True


def _sample(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row of ``logits`` (B, V): greedy at temperature 0, else temperature + top-p."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        sorted_probs[(cumulative - sorted_probs) >= sampling.top_p] = 0.0  # keeps at least the top token
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _signals(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax and entropy (nats) of each row, in float64: over a vocabulary of ~50k,
    float32 sums drift by ~1e-4 nats, more than the differences people read off these numbers."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return logprobs, -(logprobs.exp() * logprobs).sum(dim=-1)


def alternatives(backend: Any, logprobs: torch.Tensor) -> list[list[TokenAlternative]]:
    """The ``backend.top_k`` most likely tokens of each row of ``logprobs`` (R, V): one topk for all rows."""
    k = min(int(getattr(backend, "top_k", 0)), logprobs.shape[-1])
    if k <= 0:
        return [[] for _ in range(logprobs.shape[0])]
    values, ids = logprobs.topk(k, dim=-1)  # (R, k) each
    return [
        [TokenAlternative(id=i, text=backend.token_text(i), logprob=v) for i, v in zip(row_ids, row_values)]
        for row_ids, row_values in zip(ids.tolist(), values.tolist())
    ]


def prefill(
    backend: Any, session: PrefixSession, ids: list[int], extra: dict[str, Any], images: list[np.ndarray] | None
) -> tuple[torch.Tensor, CacheStats]:
    """Bring ``session``'s cache to ``ids`` (encoding only what is new); return the last logits (1, V)."""
    if session.owner is not backend:
        session.reset()
        session.owner = backend
    image_keys = [_image_key(image) for image in images or []]
    reuse = min(_common_prefix(session.token_ids, ids), len(ids) - 1)  # at least one token must run
    runs = backend.image_runs(ids)
    for index, start in enumerate(runs):  # same placeholder tokens, maybe another picture
        if start < reuse and (index >= len(session.image_keys) or session.image_keys[index] != image_keys[index]):
            reuse = start
            break
    prefix_changed = reuse < len(session.token_ids)
    if session.cache is None or reuse == 0 or not _crop_to(session.cache, reuse):
        session.cache, reuse = None, 0
    first_image = sum(1 for start in runs if start < reuse)
    inputs: dict[str, Any] = {}
    if extra and first_image < len(runs):
        inputs = {k: v[first_image:] if k in ("pixel_values", "image_sizes") else v for k, v in extra.items()}
    new = torch.tensor([ids[reuse:]], device=backend.device)
    out = backend.model(input_ids=new, past_key_values=session.cache, use_cache=True, logits_to_keep=1, **inputs)
    session.cache = out.past_key_values
    session.token_ids = list(ids)
    session.image_keys = image_keys
    stats = CacheStats(
        prompt_tokens=len(ids), reused_tokens=reuse, encoded_tokens=len(ids) - reuse, prefix_changed=prefix_changed
    )
    return out.logits[:, -1, :], stats


def decode(
    backend: Any,
    ids: list[int],
    extra: dict[str, Any],
    images: list[np.ndarray] | None,
    n: int,
    sampling: SamplingParams,
    stop: list[str],
    session: PrefixSession,
    should_stop: Callable[[], bool],
    on_token: TokenListener | None = None,
) -> GenerateResult:
    """Prefill (reusing ``session``'s cache), then draw ``n`` continuations token by token."""
    started = time.perf_counter()
    logits, stats = prefill(backend, session, ids, extra, images)
    prefill_s = time.perf_counter() - started
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=backend.device).manual_seed(sampling.seed)
    cache = session.cache
    prompt_len = len(ids)
    if n > 1:
        logits = logits.expand(n, -1)
    drawn: list[list[TokenInfo]] = [[] for _ in range(n)]
    texts = [TokenTexts(backend.tokenizer.decode) for _ in range(n)]
    finish: list[str | None] = [None] * n
    cut: list[int | None] = [None] * n  # kept token count once a stop string is hit
    first_token_s, fed = 0.0, 0
    for position in range(sampling.max_new_tokens):
        logprobs, entropy = _signals(logits)
        chosen = _sample(logits, sampling, generator)
        top = alternatives(backend, logprobs)
        for row in range(n):
            if finish[row] is not None:
                continue
            token = int(chosen[row])
            if token in backend.eos_ids and not sampling.ignore_eos:
                finish[row] = "eos"
                continue
            info = TokenInfo(
                id=token,
                text=texts[row].push(token),
                logprob=float(logprobs[row, token]),
                entropy=float(entropy[row]),
                top=top[row],
            )
            drawn[row].append(info)
            if on_token is not None:
                on_token(row, info)
            if stop:
                kept = stop_cut(drawn[row], stop)
                if kept is not None:
                    finish[row], cut[row] = "stop", kept
        if position == 0:
            first_token_s = time.perf_counter() - started
        if all(f is not None for f in finish):
            break
        if should_stop():
            finish = [f or "interrupted" for f in finish]
            break
        if n == 1:
            out = backend.model(input_ids=chosen.view(1, 1), past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :]
        else:
            logits = decode_packed(backend, chosen, cache, prompt_len, fed)
        fed += 1
    generations = []
    for row in range(n):
        tokens = drawn[row][: cut[row]] if cut[row] is not None else drawn[row]
        generations.append(
            Generation(text="".join(t.text for t in tokens), tokens=tokens, finish_reason=finish[row] or "length")
        )
    if n == 1:  # the cache holds the prompt and the tokens fed after it: keep them for the next prompt
        usable = min(len(generations[0].tokens), fed)
        session.token_ids = ids + [t.id for t in generations[0].tokens[:usable]]
    else:  # candidates are interleaved in the cache: keep the prompt only
        session.token_ids = list(ids)
    if not _crop_to(cache, len(session.token_ids)):
        session.reset()
    total = time.perf_counter() - started
    timing = {"prefill_s": prefill_s, "first_token_s": first_token_s, "decode_s": total - prefill_s, "total_s": total}
    return GenerateResult(generations=generations, cache=stats, timing=timing)


def decode_packed(backend: Any, chosen: torch.Tensor, cache: Any, prompt_len: int, step: int) -> torch.Tensor:
    """One decode step for n candidates sharing one copy of the prompt's cache.

    The n new tokens go in as one row (1, n) at position ``prompt_len + step`` each; the
    cache row holds the prompt, then the candidates' tokens interleaved step by step.
    A mask lets candidate i see the prompt and its own earlier tokens only, so the
    prompt's keys and values are read once per step instead of once per candidate.
    """
    n = chosen.shape[0]
    total = prompt_len + n * (step + 1)
    allowed = torch.zeros(n, total, dtype=torch.bool, device=backend.device)
    allowed[:, :prompt_len] = True
    own = (
        prompt_len
        + torch.arange(step + 1, device=backend.device)[None, :] * n
        + torch.arange(n, device=backend.device)[:, None]
    )  # (n, step+1)
    allowed.scatter_(1, own, True)
    mask = torch.zeros(allowed.shape, dtype=backend.dtype, device=backend.device)
    mask[~allowed] = torch.finfo(backend.dtype).min
    positions = torch.full((1, n), prompt_len + step, device=backend.device)
    out = backend.model(
        input_ids=chosen.view(1, n),
        position_ids=positions,
        attention_mask=mask[None, None],
        past_key_values=cache,
        use_cache=True,
    )
    return out.logits[0]  # (n, V)


def score_packed(
    backend: Any, session: PrefixSession, prompt_len: int, first_logits: torch.Tensor, pieces: list[list[int]]
) -> ScoreResult:
    first, first_entropy = _signals(first_logits[:1])  # (1, V): predicts every continuation's first token
    feed = [piece[:-1] for piece in pieces]  # a continuation's last token predicts nothing we need
    total = sum(len(f) for f in feed)
    results: list[list[float]] = [[float(first[0, piece[0]])] for piece in pieces]
    entropies: list[list[float]] = [[float(first_entropy[0])] for _ in pieces]
    first_top = alternatives(backend, first)[0]
    tops: list[list[list[TokenAlternative]]] = [[first_top] for _ in pieces]
    if total:
        packed = torch.tensor([[t for f in feed for t in f]], device=backend.device)
        positions = torch.tensor([[prompt_len + i for f in feed for i in range(len(f))]], device=backend.device)
        # (1, 1, Q, prompt + Q): every token sees the prompt, and the earlier tokens of its own continuation.
        allowed = torch.zeros(total, prompt_len + total, dtype=torch.bool, device=backend.device)
        allowed[:, :prompt_len] = True
        start = 0
        for f in feed:
            block = torch.ones(len(f), len(f), dtype=torch.bool, device=backend.device).tril()
            allowed[start : start + len(f), prompt_len + start : prompt_len + start + len(f)] = block
            start += len(f)
        mask = torch.zeros(allowed.shape, dtype=backend.dtype, device=backend.device)
        mask[~allowed] = torch.finfo(backend.dtype).min
        out = backend.model(
            input_ids=packed,
            position_ids=positions,
            attention_mask=mask[None, None],
            past_key_values=session.cache,
            use_cache=True,
        )
        logprobs, entropy = _signals(out.logits[0])  # (Q, V), (Q,)
        packed_top = alternatives(backend, logprobs)
        start = 0
        for row, (piece, f) in enumerate(zip(pieces, feed)):
            for offset in range(len(f)):
                results[row].append(float(logprobs[start + offset, piece[offset + 1]]))
                entropies[row].append(float(entropy[start + offset]))
                tops[row].append(packed_top[start + offset])
            start += len(f)
        if not _crop_to(session.cache, prompt_len):  # drop the packed tokens: the prompt stays cached
            session.reset()
    texts = [TokenTexts(backend.tokenizer.decode).texts(piece) for piece in pieces]
    return ScoreResult(token_logprobs=results, tokens=pieces, texts=texts, entropies=entropies, alternatives=tops)
