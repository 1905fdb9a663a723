"""The transformers backend's forward passes: prefill with prefix reuse (and copies of peers' prefixes),
the decode loop, packed candidates, one-pass scoring and continuous batches of several callers' calls
(:class:`ContinuousBatch`); :mod:`studio.models.hf` says why each is shaped as it is.

Functions here take the loaded :class:`~studio.models.hf.TransformersBackend` (its model,
tokenizer, device, dtype and eos ids); the caller holds its device lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer

from studio.models.base import (
    CacheStats,
    GenerateResult,
    Generation,
    PrefixSession,
    SamplingParams,
    ScoreResult,
    Stop,
    TokenListener,
)
from studio.models.hf_steering import recorded_last_token
from studio.models.steering import current_recorder, steering_key
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


#: Tokens looked at first for top-p sampling (all of them when these hold less than ``top_p``).
NUCLEUS_FIRST_TRY = 256


def _sample(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row of ``logits`` (B, V): greedy at temperature 0, else temperature + top-p."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        # The nucleus is usually within the top few hundred tokens: sort those (a full sort of a
        # large vocabulary per row per token costs more than a batched decode step's attention).
        sorted_probs, order = probs.topk(min(NUCLEUS_FIRST_TRY, probs.shape[-1]), dim=-1)
        if bool((sorted_probs.sum(dim=-1) < sampling.top_p).any()):
            sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        sorted_probs[(cumulative - sorted_probs) >= sampling.top_p] = 0.0  # keeps at least the top token
        # Draw within the sorted head: the same distribution, but multinomial's noise is drawn for a
        # few hundred tokens instead of the whole vocabulary (1.2 ms of a token's 2.4 ms on 2 cores).
        picked = torch.multinomial(sorted_probs, num_samples=1, generator=generator)
        return order.gather(-1, picked).squeeze(-1)
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


def _plain(cache: Any) -> bool:
    """A transformers cache whose layers are plain key/value tensors (no sliding window, no state):
    these can be sliced, copied and stacked into a batch."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _cache_of(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=pairs)


def best_peer(
    session: PrefixSession, ids: list[int], reuse: int, cached: Callable[[PrefixSession], int | None]
) -> tuple[int, PrefixSession | None]:
    """The peer of ``session`` whose cached prompt shares the most of ``ids``, when that beats
    ``reuse`` by more than a few tokens (a few are cheaper to encode than a copy is to make):
    (how much of ``ids`` it holds, the peer) or (``reuse``, None). ``cached(peer)`` is how many of
    a peer's ``token_ids`` its cache holds in a form this caller can copy, or None. At least one
    token of ``ids`` is always left to run."""
    best, donor = reuse, None
    for peer in session.peers or []:
        length = cached(peer) if peer is not session else None
        if length is None:
            continue
        common = min(_common_prefix(peer.token_ids, ids), len(ids) - 1, length)
        if common > best + 8:
            best, donor = common, peer
    return best, donor


def _adopt_peer_prefix(backend: Any, session: PrefixSession, ids: list[int], reuse: int) -> int:
    """Copy a peer's cached prompt when it shares more of ``ids`` than ``session`` does; the new reuse.

    Lockstep rollouts forked from one step all start from the same history: the first encodes
    it, the others copy its keys and values (a memory copy instead of a forward pass)."""

    def cached(peer: PrefixSession) -> int | None:
        plain = (
            peer.owner is backend and peer.steering == session.steering and not peer.image_keys and _plain(peer.cache)
        )
        return peer.cache.get_seq_length() if plain else None

    best, donor = best_peer(session, ids, reuse, cached)
    if donor is None:
        return reuse
    session.cache = _cache_of(
        [(layer.keys[:, :, :best].clone(), layer.values[:, :, :best].clone()) for layer in donor.cache.layers]
    )
    session.token_ids, session.image_keys = ids[:best], []
    return best


def prefill(
    backend: Any, session: PrefixSession, ids: list[int], extra: dict[str, Any], images: list[np.ndarray] | None
) -> tuple[torch.Tensor, CacheStats]:
    """Bring ``session``'s cache to ``ids`` (encoding only what is new); return the last logits (1, V)."""
    steerer = getattr(backend, "steerer", None)
    key = steering_key(steerer.steering if steerer is not None else None)
    if session.owner is not backend or session.steering != key:  # keys and values computed otherwise
        session.reset()
        session.owner, session.steering = backend, key
    image_keys = [_image_key(image) for image in images or []]
    reuse = min(_common_prefix(session.token_ids, ids), len(ids) - 1)  # at least one token must run
    shared = 0
    if session.peers and not images:
        own = reuse
        reuse = _adopt_peer_prefix(backend, session, ids, reuse)
        shared = reuse - own if reuse > own else 0
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
    phase = steerer.in_phase("prompt") if steerer is not None else contextlib.nullcontext()
    recorder = current_recorder() if steerer is not None else None
    with phase, recorded_last_token(steerer.layers if steerer is not None else [], recorder):
        out = backend.model(input_ids=new, past_key_values=session.cache, use_cache=True, logits_to_keep=1, **inputs)
    session.cache = out.past_key_values
    session.token_ids = list(ids)
    session.image_keys = image_keys
    stats = CacheStats(
        prompt_tokens=len(ids),
        reused_tokens=reuse,
        encoded_tokens=len(ids) - reuse,
        prefix_changed=prefix_changed,
        shared_tokens=shared,
    )
    return out.logits[:, -1, :], stats


@dataclass
class PreparedCall:
    """One generate call with its prompt encoded (what :func:`decode` and :class:`ContinuousBatch` take)."""

    ids: list[int]
    extra: dict[str, Any]
    images: list[np.ndarray] | None
    n: int
    sampling: SamplingParams
    stop: list[Stop]
    session: PrefixSession
    should_stop: Callable[[], bool]
    on_token: TokenListener | None = None


class _Lane:
    """One generate call's decoding state: its rows' drawn tokens, stop strings, finish reasons and
    timing. :func:`decode` runs one lane; :class:`ContinuousBatch` runs several in one batch."""

    def __init__(self, backend: Any, call: PreparedCall) -> None:
        self.started = time.perf_counter()
        self.backend, self.ids, self.n, self.sampling, self.stop = backend, call.ids, call.n, call.sampling, call.stop
        self.session, self.should_stop, self.on_token = call.session, call.should_stop, call.on_token
        n, sampling = call.n, call.sampling
        self.generator = None
        if sampling.seed is not None:
            self.generator = torch.Generator(device=backend.device).manual_seed(sampling.seed)
        self.drawn: list[list[TokenInfo]] = [[] for _ in range(n)]
        self.texts = [TokenTexts(backend.tokenizer.decode) for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.cut: list[int | None] = [None] * n  # kept token count once a stop string is hit
        self.taken = 0  # positions drawn
        self.fed = 0  # tokens fed back through the model (their keys and values are cached)
        self.prefill_s = self.first_token_s = 0.0
        self.stats = CacheStats()
        self.chosen: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return all(f is not None for f in self.finish)

    def take(self, logits: torch.Tensor) -> bool:
        """Draw this position's token of every row from ``logits`` (n, V); True when the lane is done."""
        logprobs, entropy = _signals(logits)
        chosen = _sample(logits, self.sampling, self.generator)
        top = alternatives(self.backend, logprobs)
        for row in range(self.n):
            if self.finish[row] is not None:
                continue
            token = int(chosen[row])
            if token in self.backend.eos_ids and not self.sampling.ignore_eos:
                self.finish[row] = "eos"
                continue
            info = TokenInfo(
                id=token,
                text=self.texts[row].push(token),
                logprob=float(logprobs[row, token]),
                entropy=float(entropy[row]),
                top=top[row],
            )
            self.drawn[row].append(info)
            if self.on_token is not None:
                self.on_token(row, info)
            if self.stop:
                kept = stop_cut(self.drawn[row], self.stop)
                if kept is not None:
                    self.finish[row], self.cut[row] = "stop", kept
        self.chosen = chosen
        self.taken += 1
        if self.taken == 1:
            self.first_token_s = time.perf_counter() - self.started
        if self.done:
            return True
        if self.should_stop():
            self.finish = [f or "interrupted" for f in self.finish]
            return True
        if self.taken >= self.sampling.max_new_tokens:
            self.finish = [f or "length" for f in self.finish]
            return True
        return False

    def generations(self) -> list[Generation]:
        out = []
        for row in range(self.n):
            tokens = self.drawn[row][: self.cut[row]] if self.cut[row] is not None else self.drawn[row]
            out.append(
                Generation(
                    text="".join(t.text for t in tokens), tokens=tokens, finish_reason=self.finish[row] or "length"
                )
            )
        return out

    def kept_ids(self, generations: list[Generation]) -> list[int]:
        """The tokens the session's cache keeps: with one row, the prompt and the fed tokens of the
        kept output (the next prompt starts with them); with candidates (interleaved), the prompt."""
        if self.n != 1:
            return list(self.ids)
        usable = min(len(generations[0].tokens), self.fed)
        return self.ids + [t.id for t in generations[0].tokens[:usable]]

    def result(self, generations: list[Generation]) -> GenerateResult:
        total = time.perf_counter() - self.started
        timing = {
            "prefill_s": self.prefill_s,
            "first_token_s": self.first_token_s,
            "decode_s": total - self.prefill_s,
            "total_s": total,
        }
        return GenerateResult(generations=generations, cache=self.stats, timing=timing)


def _prefilled(backend: Any, call: PreparedCall) -> tuple[_Lane, torch.Tensor]:
    """A lane for ``call`` with its prompt prefilled (reusing its session's cache); the last logits (1, V)."""
    lane = _Lane(backend, call)
    logits, lane.stats = prefill(backend, call.session, call.ids, call.extra, call.images)
    lane.prefill_s = time.perf_counter() - lane.started
    return lane, logits


def decode(backend: Any, call: PreparedCall) -> GenerateResult:
    """Prefill (reusing the session's cache), then draw ``call.n`` continuations token by token."""
    return _finish_alone(backend, *_prefilled(backend, call))


class ContinuousBatch:
    """Generate calls decoding together, one forward per token for all of them; a call joins
    between two steps (its prompt prefilled on its own session: prefill is compute-bound, so
    batching it gains little) and leaves as soon as it is done, with its cache given back.

    Each call keeps its own sampling settings and random generator, so its tokens are the ones
    :func:`decode` draws for it alone (the logits differ only by float rounding). Calls with
    images, or models whose caches are not plain tensors, decode by themselves in :meth:`add`.
    The caller holds the device lock around each :meth:`add` and :meth:`step`.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.batch: _Batch | None = None

    @property
    def busy(self) -> bool:
        return self.batch is not None

    @property
    def live(self) -> list[_Lane]:
        return [lane for lane in self.batch.lanes if not lane.done] if self.batch is not None else []

    def add(self, call: PreparedCall) -> tuple[_Lane, GenerateResult | None]:
        """Prefill ``call`` and draw its first token; its result when that already ends it (or it
        decoded by itself), else None: it decodes with the batch from the next :meth:`step` on."""
        lane, logits = _prefilled(self.backend, call)
        if call.images or not _plain(call.session.cache):
            return lane, _finish_alone(self.backend, lane, logits)
        if lane.take(logits.expand(call.n, -1)):
            generations = lane.generations()
            lane.session.token_ids = lane.kept_ids(generations)  # nothing fed: the prompt, as prefilled
            return lane, lane.result(generations)
        if self.batch is None:
            self.batch = _Batch(self.backend, lane)
        else:
            self.batch.add(lane)
        return lane, None

    def step(self) -> list[tuple[_Lane, GenerateResult]]:
        """One forward for every live lane; the lanes that finished, with their results."""
        batch = self.batch
        assert batch is not None
        logits = batch.step()
        finished = []
        for lane in batch.lanes:
            if lane.done:  # finished earlier: its rows are idle until dropped
                continue
            lane.fed += 1
            if lane.take(logits[batch.rows_of(lane)]):
                generations = lane.generations()
                batch.give_back(lane, generations)
                finished.append((lane, lane.result(generations)))
        idle = [lane for lane in batch.lanes if lane.done]
        if len(idle) == len(batch.lanes):
            self.batch = None
        elif sum(lane.n for lane in idle) * 4 >= sum(lane.n for lane in batch.lanes):
            batch.drop(idle)  # a copy now beats computing idle rows
        return finished

    def abort(self) -> list[_Lane]:
        """After a failed step: the lanes that were live (their sessions reset: the caches may be
        half-written); the batch is gone."""
        lanes = self.live
        for lane in lanes:
            lane.session.reset()
        self.batch = None
        return lanes


def _finish_alone(backend: Any, lane: _Lane, logits: torch.Tensor) -> GenerateResult:
    """Decode a prefilled lane by itself: one row over the session's cache, or ``n`` candidates
    packed over one copy of it (:func:`decode_packed`)."""
    cache = lane.session.cache
    logits = logits.expand(lane.n, -1) if lane.n > 1 else logits
    while not lane.take(logits):
        if lane.n == 1:
            out = backend.model(input_ids=lane.chosen.view(1, 1), past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :]
        else:
            logits = decode_packed(backend, lane.chosen, cache, len(lane.ids), lane.fed)
        lane.fed += 1
    generations = lane.generations()
    lane.session.token_ids = lane.kept_ids(generations)
    if not _crop_to(cache, len(lane.session.token_ids)):
        lane.session.reset()
    return lane.result(generations)


class _RoomyLayer(DynamicLayer):
    """A cache layer holding its keys and values in zeroed buffers with free columns.

    Each decode step writes its column in place, and attention reads the whole buffer (the
    free columns are masked; zeros, so they add exact zeros). A plain layer concatenates,
    and a prefix view of a buffer is not contiguous: either way the whole batch's cache would
    be copied every token, which was half the time of a batched step on CPU. ``keys`` and
    ``values`` are views of the filled columns (what ``get_seq_length`` reads)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.fill(keys, values, room)

    def fill(self, k: torch.Tensor, v: torch.Tensor, room: int) -> None:
        shape = (k.shape[0], k.shape[1], k.shape[2] + room)
        self.key_buffer = k.new_zeros(shape + (k.shape[3],))
        self.value_buffer = v.new_zeros(shape + (v.shape[3],))
        self.key_buffer[:, :, : k.shape[2]] = k
        self.value_buffer[:, :, : k.shape[2]] = v
        self.length = k.shape[2]
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]

    @property
    def capacity(self) -> int:
        return self.key_buffer.shape[2]

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` more (by half again when out of room)."""
        if self.length + columns > self.capacity:
            self.fill(self.keys, self.values, max(columns, self.length // 2))

    def update(self, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.reserve(k.shape[2])  # the caller reserved already: the mask was made for this capacity
        end = self.length + k.shape[2]
        self.key_buffer[:, :, self.length : end] = k
        self.value_buffer[:, :, self.length : end] = v
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.key_buffer, self.value_buffer

    def add_rows(self, k: torch.Tensor, v: torch.Tensor, room: int) -> None:
        """Stack new rows under the filled columns (with at least ``room`` free columns after)."""
        room = max(room, self.capacity - self.length)
        self.fill(torch.cat([self.keys, k], dim=0), torch.cat([self.values, v], dim=0), room)

    def pad_left(self, columns: int) -> None:
        """Zero columns before the filled ones (a longer prompt joins)."""
        room = self.capacity - self.length
        k, v = self.keys, self.values
        pad_k = k.new_zeros(k.shape[0], k.shape[1], columns, k.shape[3])
        pad_v = v.new_zeros(v.shape[0], v.shape[1], columns, v.shape[3])
        self.fill(torch.cat([pad_k, k], dim=2), torch.cat([pad_v, v], dim=2), room)

    def keep(self, rows: torch.Tensor, cut: int) -> None:
        """Keep these batch rows, from column ``cut`` on (the free columns stay)."""
        room = self.key_buffer.shape[2] - self.length
        self.fill(self.keys.index_select(0, rows)[:, :, cut:], self.values.index_select(0, rows)[:, :, cut:], room)


class _Batch:
    """The stacked caches of the lanes being decoded together.

    Row block of a lane: its ``n`` rows. Columns: shared, one per decode step at the end. A
    lane's prompt is right-aligned to the column where its first decode step writes (its
    ``end``; left padding before it, masked), so its own keys and values are one contiguous run
    of columns from ``start``. Lanes joining later get the current end column as theirs.
    """

    def __init__(self, backend: Any, lane: _Lane) -> None:
        self.backend = backend
        self.lanes: list[_Lane] = []
        self.start: dict[int, int] = {}  # id(lane) -> first column of its prompt
        self.end: dict[int, int] = {}  # id(lane) -> column of its first decoded token
        width = len(lane.ids)
        self.valid = torch.zeros(0, width, dtype=torch.bool, device=backend.device)
        room = lane.sampling.max_new_tokens - lane.taken + 1
        self.cache = _cache_of([])
        self.cache.layers = [
            _RoomyLayer(
                layer.keys.new_zeros((0, layer.keys.shape[1], width, layer.keys.shape[3])),
                layer.values.new_zeros((0, layer.values.shape[1], width, layer.values.shape[3])),
                room,
            )
            for layer in lane.session.cache.layers
        ]
        self.add(lane)

    @property
    def width(self) -> int:
        """Columns filled (every lane's next token goes to this column)."""
        return self.valid.shape[1]

    def rows_of(self, lane: _Lane) -> slice:
        start = 0
        for other in self.lanes:
            if other is lane:
                return slice(start, start + lane.n)
            start += other.n
        raise KeyError("lane not in batch")

    def add(self, lane: _Lane) -> None:
        """Stack a prefilled lane's cache in as new rows (its prompt ending at the current end column)."""
        need = len(lane.ids)
        if need > self.width:  # a longer prompt than the room on the left: pad every row on the left
            self._pad_left(need - self.width)
        width, device = self.width, self.backend.device
        for layer, own in zip(self.cache.layers, lane.session.cache.layers):
            shape = (lane.n, own.keys.shape[1], width)
            keys = own.keys.new_zeros(shape + (own.keys.shape[3],))
            values = own.values.new_zeros(shape + (own.values.shape[3],))
            keys[:, :, width - need :] = own.keys
            values[:, :, width - need :] = own.values
            layer.add_rows(keys, values, lane.sampling.max_new_tokens - lane.taken + 1)
        rows = torch.zeros(lane.n, width, dtype=torch.bool, device=device)
        rows[:, width - need :] = True
        self.valid = torch.cat([self.valid, rows], dim=0)
        self.lanes.append(lane)
        self.start[id(lane)], self.end[id(lane)] = width - need, width

    def _pad_left(self, columns: int) -> None:
        for layer in self.cache.layers:
            layer.pad_left(columns)
        self.valid = torch.cat([self.valid.new_zeros(self.valid.shape[0], columns), self.valid], dim=1)
        for key in self.start:
            self.start[key] += columns
            self.end[key] += columns

    def step(self) -> torch.Tensor:
        """Feed every row's last drawn token (finished lanes feed theirs too, unread); logits (rows, V)."""
        device = self.backend.device
        tokens = torch.cat([lane.chosen.view(-1) for lane in self.lanes]).view(-1, 1)
        positions = torch.cat(
            [torch.full((lane.n,), len(lane.ids) + lane.fed, device=device) for lane in self.lanes]
        ).view(-1, 1)
        self.valid = torch.cat([self.valid, torch.ones(len(tokens), 1, dtype=torch.bool, device=device)], dim=1)
        for layer in self.cache.layers:
            layer.reserve(1)
        mask = torch.full(
            (len(tokens), self.cache.layers[0].capacity),
            torch.finfo(self.backend.dtype).min,
            dtype=self.backend.dtype,
            device=device,
        )  # free columns stay masked
        mask[:, : self.valid.shape[1]][self.valid] = 0.0
        out = self.backend.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=mask[:, None, None, :],
            past_key_values=self.cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]

    def give_back(self, lane: _Lane, generations: list[Generation]) -> None:
        """Hand ``lane`` its session's cache: the prompt it came with, plus the tokens it keeps."""
        kept = lane.kept_ids(generations)
        session, extra = lane.session, len(kept) - len(lane.ids)
        if extra > 0:
            row = self.rows_of(lane).start
            new = slice(self.end[id(lane)], self.end[id(lane)] + extra)
            pairs = []
            for own, batch in zip(session.cache.layers, self.cache.layers):
                pairs.append(
                    (
                        torch.cat([own.keys, batch.keys[row : row + 1, :, new]], dim=2),
                        torch.cat([own.values, batch.values[row : row + 1, :, new]], dim=2),
                    )
                )
            session.cache = _cache_of(pairs)
        session.token_ids = kept

    def drop(self, gone: list[_Lane]) -> None:
        """Take finished lanes' rows (and padding no remaining lane needs) out of the batch."""
        keep_rows: list[int] = []
        for lane in self.lanes:
            if lane not in gone:
                rows = self.rows_of(lane)
                keep_rows += range(rows.start, rows.stop)
        for lane in gone:
            self.start.pop(id(lane), None)
            self.end.pop(id(lane), None)
        self.lanes = [lane for lane in self.lanes if lane not in gone]
        if not self.lanes:
            return
        cut = min(self.start.values())  # columns only padding now
        index = torch.tensor(keep_rows, device=self.backend.device)
        for layer in self.cache.layers:
            layer.keep(index, cut)
        self.valid = self.valid.index_select(0, index)[:, cut:]
        for key in self.start:
            self.start[key] -= cut
            self.end[key] -= cut


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
    """Every continuation in ``pieces`` scored after the cached prompt, in one forward: the
    continuations' tokens go in as one packed row (each sees the prompt and its own earlier tokens)."""
    feed = [piece[:-1] for piece in pieces]  # a continuation's last token predicts nothing we need
    total = sum(len(f) for f in feed)
    feed_logits = None
    if total:
        packed = torch.tensor([[t for f in feed for t in f]], device=backend.device)
        positions = torch.tensor([[prompt_len + i for f in feed for i in range(len(f))]], device=backend.device)
        # (1, 1, Q, prompt + Q): every token sees the prompt, and the earlier tokens of its own continuation.
        allowed = packed_mask(feed, prompt_len, backend.device)
        mask = torch.zeros(allowed.shape, dtype=backend.dtype, device=backend.device)
        mask[~allowed] = torch.finfo(backend.dtype).min
        out = backend.model(
            input_ids=packed,
            position_ids=positions,
            attention_mask=mask[None, None],
            past_key_values=session.cache,
            use_cache=True,
        )
        feed_logits = out.logits[0]
        if not _crop_to(session.cache, prompt_len):  # drop the packed tokens: the prompt stays cached
            session.reset()
    return score_answer(backend, first_logits, feed_logits, pieces)


def packed_mask(feed: list[list[int]], prompt_len: int, device: Any) -> torch.Tensor:
    """(Q, prompt + Q) bool: packed continuation token q sees the prompt and its own earlier tokens."""
    total = sum(len(f) for f in feed)
    allowed = torch.zeros(total, prompt_len + total, dtype=torch.bool, device=device)
    allowed[:, :prompt_len] = True
    start = 0
    for f in feed:
        block = torch.ones(len(f), len(f), dtype=torch.bool, device=device).tril()
        allowed[start : start + len(f), prompt_len + start : prompt_len + start + len(f)] = block
        start += len(f)
    return allowed


def score_answer(
    backend: Any, first_logits: torch.Tensor, feed_logits: torch.Tensor | None, pieces: list[list[int]]
) -> ScoreResult:
    """The scores of ``pieces`` from the prompt's last logits (1, V) and the packed continuation
    tokens' logits (Q, V; None when every piece is one token)."""
    first, first_entropy = _signals(first_logits[:1])  # (1, V): predicts every continuation's first token
    results: list[list[float]] = [[float(first[0, piece[0]])] for piece in pieces]
    entropies: list[list[float]] = [[float(first_entropy[0])] for _ in pieces]
    first_top = alternatives(backend, first)[0]
    tops: list[list[list[TokenAlternative]]] = [[first_top] for _ in pieces]
    if feed_logits is not None:
        logprobs, entropy = _signals(feed_logits)  # (Q, V), (Q,)
        packed_top = alternatives(backend, logprobs)
        start = 0
        for row, piece in enumerate(pieces):
            for offset in range(len(piece) - 1):
                results[row].append(float(logprobs[start + offset, piece[offset + 1]]))
                entropies[row].append(float(entropy[start + offset]))
                tops[row].append(packed_top[start + offset])
            start += len(piece) - 1
    texts = [TokenTexts(backend.tokenizer.decode).texts(piece) for piece in pieces]
    return ScoreResult(token_logprobs=results, tokens=pieces, texts=texts, entropies=entropies, alternatives=tops)
