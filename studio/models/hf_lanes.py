"""Lanes: every pool member's model work, packed into one forward pass per scheduler step.

A :class:`~studio.models.lockstep.LockstepPool` on the transformers backend asks one :class:`LaneBatcher` for all of
its members' ``generate`` and ``score`` calls. Each step is one forward whose input is a single packed row: the next
token of every call that is decoding, the new prompt tokens of every call that just arrived (a step's prefill, chunked
in beside the others' decode: on a compute-bound CPU the decode rides on the prefill's compute, and on a memory-bound
GPU the prefill rides on the decode's weight reads) and the packed continuations of every score call. The small passes
an agent step makes besides decoding (the forced ``Thought:``, the inserted ``Action:``, the valid actions) cost a
forward each when a caller is alone; here they share the step's forward too.

Each session's keys and values live in a slot: one row of preallocated buffers (slots, kv heads, columns, head dim)
per layer, where column = position. A call writes its tokens' keys and values into its own slot in place, so joining,
leaving and growing a prompt copy nothing, and there is no padding. Attention is :func:`lanes_attention`, run per call
over its own slot's columns (its own mask: causal, or a score's packed continuations). Everything else in the forward
(the linear layers, the vocabulary head over the rows wanted) runs once over the packed row.

Calls this cannot pack (candidates, images) run by themselves, as they would alone; their session's cache is copied
out of its slot first (:meth:`LaneStore.detach`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from transformers import AttentionInterface

from studio.errors import StudioError
from studio.models.base import (
    Batcher,
    CacheStats,
    GenerateCall,
    GenerateResult,
    PrefixSession,
    ScoreCall,
    ScoreResult,
)
from studio.models.steering import steered, steering_key
from studio.models.hf_decode import (
    PreparedCall,
    _cache_of,
    _common_prefix,
    _Lane,
    _plain,
    best_peer,
    packed_mask,
    score_answer,
)

#: The attention implementation name the lane forwards run under.
LANES = "studio_lanes"

#: Model families whose layers all attend over the full cache through transformers' attention
#: interface (the ones :func:`lanes_supported` accepts when nothing else rules them out).
LANE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "granite", "olmo", "olmo2", "phi3"})

#: Columns a slot's buffers start with; they grow by half again when a call needs more.
START_COLUMNS = 512


def lanes_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    lane_plan: list[tuple[int, int, int, int, torch.Tensor | None]] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of a packed row: each call's queries over its own slot's columns.

    ``query`` is (1, heads, packed, dim); ``key``/``value`` are the layer's slot buffers
    (slots, kv heads, columns, dim). ``lane_plan`` holds, per call: its slot, its first and end
    query index, how many of the slot's columns it sees and its mask (None: all of them)."""
    if lane_plan is None:
        raise RuntimeError("lanes attention runs only inside a lane batch")
    outputs = []
    for slot, first, end, columns, mask in lane_plan:
        outputs.append(
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, first:end],
                key[slot : slot + 1, :, :columns],
                value[slot : slot + 1, :, :columns],
                attn_mask=mask,
                scale=scaling,
                enable_gqa=True,  # grouped kv heads are read in place, not repeated
            )
        )
    out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(LANES, lanes_attention)


def lanes_supported(backend: Any) -> bool:
    """Whether this model's forwards can run packed in lanes: a text model of a known family whose
    every layer attends over the whole cache (no sliding window, no recurrent state)."""
    config = getattr(getattr(backend, "model", None), "config", None)
    if config is None or getattr(config, "model_type", None) not in LANE_MODEL_TYPES:
        return False
    if getattr(backend, "image_token_id", None) is not None or type(config).sub_configs:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ["full_attention"])


class _InSlot:
    """What an attached session's ``cache`` holds: the store and slot its keys and values live in.
    It is not a transformers cache (no ``layers``), so nothing outside the lanes reads it as one."""

    def __init__(self, store: LaneStore, slot: int) -> None:
        self.store, self.slot = store, slot


class LaneStore:
    """Slots of preallocated key/value buffers, one per attached session, and the cache object a
    lane forward writes through (:meth:`update`: each packed token into its slot and column)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        config = backend.model.config
        self.layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.sessions: list[PrefixSession | None] = []  # slot -> its session
        self.writes: tuple[torch.Tensor, torch.Tensor] | None = None  # (slot, column) of each packed token

    @property
    def columns(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def _resize(self, slots: int, columns: int) -> None:
        """Buffers of ``slots`` x ``columns`` holding what the old ones held (new memory is zeros)."""
        dtype, device = self.backend.dtype, self.backend.device
        shape = (slots, self.kv_heads, columns, self.head_dim)
        old_slots, old_columns = len(self.sessions), self.columns
        for buffers in (self.keys, self.values):
            for layer in range(self.layers):
                grown = torch.zeros(shape, dtype=dtype, device=device)
                if layer < len(buffers):
                    grown[:old_slots, :, :old_columns] = buffers[layer]
                    buffers[layer] = grown
                else:
                    buffers.append(grown)
        self.sessions += [None] * (slots - old_slots)

    def reserve(self, columns: int) -> None:
        """Room for ``columns`` columns in every slot."""
        if columns > self.columns:
            self._resize(len(self.sessions), max(columns, self.columns + self.columns // 2, START_COLUMNS))

    def slot_of(self, session: PrefixSession) -> int | None:
        cache = session.cache
        return cache.slot if isinstance(cache, _InSlot) and cache.store is self else None

    def attach(self, session: PrefixSession) -> int:
        """The slot of ``session``, moving its cache in (a copy of a plain transformers cache)."""
        slot = self.slot_of(session)
        if slot is not None:
            return slot
        if None not in self.sessions:
            self._resize(len(self.sessions) + max(4, len(self.sessions) // 2), max(self.columns, START_COLUMNS))
        slot = self.sessions.index(None)
        self.sessions[slot] = session
        cache, owned = session.cache, session.owner is self.backend
        length = min(len(session.token_ids), cache.get_seq_length()) if owned and _plain(cache) else 0
        if length and not session.image_keys:
            self.reserve(length + 1)
            for layer, own in enumerate(cache.layers):
                self.keys[layer][slot, :, :length] = own.keys[0, :, :length]
                self.values[layer][slot, :, :length] = own.values[0, :, :length]
            session.token_ids = session.token_ids[:length]
        else:
            session.token_ids, session.image_keys = [], []
        session.cache, session.owner = _InSlot(self, slot), self.backend
        return slot

    def detach(self, session: PrefixSession) -> None:
        """Copy ``session``'s cache out of its slot (a plain transformers cache) and free the slot."""
        slot = self.slot_of(session)
        if slot is None:
            return
        self.sessions[slot] = None
        length = len(session.token_ids)
        if not length:
            session.reset()
            return
        session.cache = _cache_of(
            [
                (self.keys[i][slot : slot + 1, :, :length].clone(), self.values[i][slot : slot + 1, :, :length].clone())
                for i in range(self.layers)
            ]
        )

    def forget(self, session: PrefixSession) -> None:
        """Drop ``session``'s cache (after a failed forward: its slot may be half-written)."""
        slot = self.slot_of(session)
        if slot is not None:
            self.sessions[slot] = None
        session.reset()

    def copy_prefix(self, source: int, target: int, length: int) -> None:
        for buffers in (self.keys, self.values):
            for layer in buffers:
                layer[target, :, :length] = layer[source, :, :length]

    # -- the cache interface a forward calls -------------------------------------------------------
    def update(self, keys: torch.Tensor, values: torch.Tensor, layer: int, *args: Any, **kwargs: Any) -> Any:
        """Write the packed row's keys and values (1, kv heads, packed, dim) into their slots and
        columns; attention then reads the whole buffers (:func:`lanes_attention`)."""
        assert self.writes is not None
        slots, columns = self.writes
        self.keys[layer][slots, :, columns] = keys[0].transpose(0, 1)
        self.values[layer][slots, :, columns] = values[0].transpose(0, 1)
        return self.keys[layer], self.values[layer]

    def get_seq_length(self, layer: int = 0) -> int:
        return 0  # positions are always given


#: Tokens a waiting prompt must gain by waiting one forward for a peer's encoding of the same
#: prefix (then copied) before it waits rather than encodes them itself.
WAIT_TO_SHARE = 64


def _reuse(store: LaneStore, session: PrefixSession, ids: list[int]) -> tuple[int, int, int | None]:
    """How much of ``ids`` needs no encoding: the session's own cached prefix, and the longest
    prefix an attached peer holds (copied, when it beats the own one by more than a few tokens).
    (own, reuse, the donor peer's slot or None); at least one token is always left to run."""
    owned = session.owner is store.backend
    own = min(_common_prefix(session.token_ids, ids), len(ids) - 1) if owned else 0
    in_slot = lambda peer: (  # noqa: E731 - a peer steered otherwise computed other keys and values
        len(peer.token_ids) if store.slot_of(peer) is not None and peer.steering == session.steering else None
    )
    reuse, donor = best_peer(session, ids, own, in_slot)
    return own, reuse, None if donor is None else store.slot_of(donor)


class _Job:
    """One call in the lanes: its prompt, its session's slot and what it feeds in the next forward."""

    call: Any
    session: PrefixSession
    prompt: list[int]
    reuse: int = 0
    stats: CacheStats

    def begin(self, store: LaneStore) -> None:
        """Take a slot and the reusable prefix (a peer's copied in): the prompt is encoded next."""
        key = steering_key(self.call.steering)
        if self.session.steering != key:  # the cache was computed under another steering: none of it is reused
            self.session.token_ids, self.session.image_keys, self.session.steering = [], [], key
        store.attach(self.session)
        own, self.reuse, donor = _reuse(store, self.session, self.prompt)
        if donor is not None:
            store.copy_prefix(donor, store.slot_of(self.session), self.reuse)  # type: ignore[arg-type]
        self.stats = CacheStats(
            prompt_tokens=len(self.prompt),
            reused_tokens=self.reuse,
            encoded_tokens=len(self.prompt) - self.reuse,
            prefix_changed=own < len(self.session.token_ids),
            shared_tokens=self.reuse - own,
        )
        self.session.token_ids = self.prompt[: self.reuse]

    def feed(self) -> tuple[list[int], list[int], int, torch.Tensor | None, list[int]]:
        """This forward's tokens, their positions, the first column they are written to, their
        attention mask over the slot's columns (None: causal is all) and which of them need logits."""
        raise NotImplementedError


def _causal(start: int, count: int, device: Any) -> torch.Tensor | None:
    """(count, start + count): token i (at column start + i) sees the columns up to its own."""
    if count == 1:
        return None
    columns = torch.arange(start + count, device=device)
    return columns[None, :] <= (torch.arange(count, device=device)[:, None] + start)


class _GenerateJob(_Job):
    """A generate call (one output): its prompt's new tokens first, then a token per forward."""

    def __init__(self, backend: Any, call: GenerateCall, prepared: PreparedCall) -> None:
        self.call, self.prepared, self.session, self.prompt = call, prepared, prepared.session, prepared.ids
        self.lane = _Lane(backend, prepared)
        self.prefilled = False

    def feed(self) -> tuple[list[int], list[int], int, torch.Tensor | None, list[int]]:
        device = self.lane.backend.device
        if not self.prefilled:
            ids, start = self.prompt[self.reuse :], self.reuse
            return ids, list(range(start, start + len(ids))), start, _causal(start, len(ids), device), [len(ids) - 1]
        column = len(self.prompt) + self.lane.fed
        return [int(self.lane.chosen[0])], [column], column, None, [0]

    def steered_rows(self, count: int) -> list[tuple[Any, str, int]]:
        return [(self.call.steering, "generated" if self.prefilled else "prompt", count)]

    def took(self, logits: torch.Tensor) -> GenerateResult | None:
        """Draw the next token from this forward's logits (1, V); the result once the call is done."""
        lane = self.lane
        if not self.prefilled:
            self.prefilled = True
            lane.stats, lane.prefill_s = self.stats, time.perf_counter() - lane.started
            self.session.token_ids = list(self.prompt)  # encoded: peers may copy it from now on
        else:
            lane.fed += 1
        if not lane.take(logits):
            return None
        generations = lane.generations()
        self.session.token_ids = lane.kept_ids(generations)  # the slot keeps the columns it wrote
        return lane.result(generations)


class _ScoreJob(_Job):
    """A score call: the prompt's new tokens and every continuation packed after it, in one forward."""

    def __init__(self, backend: Any, call: ScoreCall, ids: list[int], pieces: list[list[int]]) -> None:
        self.call, self.session, self.prompt, self.pieces = call, call.session, ids, pieces
        self.backend = backend

    def feed(self) -> tuple[list[int], list[int], int, torch.Tensor | None, list[int]]:
        device, reuse, prompt = self.backend.device, self.reuse, len(self.prompt)
        new = self.prompt[reuse:]
        pieces = [piece[:-1] for piece in self.pieces]  # a continuation's last token predicts nothing we need
        tokens = new + [t for piece in pieces for t in piece]
        positions = list(range(reuse, prompt)) + [prompt + i for piece in pieces for i in range(len(piece))]
        mask = torch.zeros(len(tokens), reuse + len(tokens), dtype=torch.bool, device=device)
        causal = _causal(reuse, len(new), device)
        mask[: len(new), :prompt] = True if causal is None else causal
        mask[len(new) :, reuse:] = packed_mask(pieces, len(new), device)
        mask[len(new) :, :reuse] = True
        wanted = list(range(len(new) - 1, len(tokens)))  # the prompt's last token, then every packed one
        return tokens, positions, reuse, mask, wanted

    def steered_rows(self, count: int) -> list[tuple[Any, str, int]]:
        new = len(self.prompt) - self.reuse  # the prompt's new tokens, then the packed continuations
        return [(self.call.steering, "prompt", new), (self.call.steering, "generated", count - new)]

    def scored(self, logits: torch.Tensor) -> ScoreResult:
        result = score_answer(self.backend, logits[:1], logits[1:] if len(logits) > 1 else None, self.pieces)
        result.cache = self.stats
        self.session.token_ids = list(self.prompt)  # the packed columns after the prompt are left behind
        return result


class LaneBatcher(Batcher):
    """The pool's batcher on the transformers backend: generate and score calls packed per forward."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self.store = LaneStore(backend)
        self.waiting: list[_Job] = []  # joined since the last step
        self.decoding: list[_GenerateJob] = []
        #: Forwards run, and the tokens they packed by kind (``prompt``: prefill, ``decode``, ``score``).
        self.forwards = 0
        self.tokens: dict[str, int] = {"prompt": 0, "decode": 0, "score": 0}

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.decoding)

    def add(self, call: GenerateCall) -> GenerateResult | None:
        if call.n != 1 or call.images:  # candidates and pictures decode as they do alone
            if call.session is not None:
                self.store.detach(call.session)
            with steered(call.steering):
                return self.backend.generate(**call.kwargs())
        prepared = self.backend._prepare(call)
        self.waiting.append(_GenerateJob(self.backend, call, prepared))
        return None

    def score(self, call: ScoreCall) -> ScoreResult | None:
        backend = self.backend
        if call.images or call.session is None:
            if call.session is not None:
                self.store.detach(call.session)
            with steered(call.steering):
                return backend.score(**call.kwargs())
        ids, _extra, pieces = backend._prepare_score(call)
        self.waiting.append(_ScoreJob(backend, call, ids, pieces))
        return None

    def step(self) -> list[tuple[Any, Any]]:
        """One forward for every waiting and decoding call; the calls that finished, with their results."""
        backend = self.backend
        with backend.lock, torch.inference_mode():
            ready, self.waiting = self._admit(self.waiting)
            jobs: list[_Job] = [*self.decoding, *ready]
            try:
                logits, rows = self._forward(jobs)
            except torch.OutOfMemoryError:
                self.waiting += ready  # aborted with the rest
                raise StudioError(backend._out_of_memory()) from None
            except BaseException:
                self.waiting += ready
                raise
        finished: list[tuple[Any, Any]] = []
        decoding = []
        for job, (first, end) in zip(jobs, rows):
            if isinstance(job, _ScoreJob):
                finished.append((job.call, job.scored(logits[first:end])))
                continue
            assert isinstance(job, _GenerateJob)
            result = job.took(logits[first:end])
            if result is None:
                decoding.append(job)
            else:
                finished.append((job.call, result))
        self.decoding = decoding
        return finished

    def _admit(self, waiting: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """The waiting calls whose prompts this forward encodes (each given its slot and reused
        prefix), and those that wait one forward more: a prompt sharing a long prefix with one
        encoded now copies it next time instead of encoding it again (forks of one step, the
        first step of episodes with one system prompt)."""
        ready: list[_Job] = []
        later: list[_Job] = []
        encoding: list[tuple[PrefixSession, list[int]]] = []
        for job in waiting:
            peers = [prompt for session, prompt in encoding if session in (job.session.peers or [])]
            if peers:
                _own, reuse, _donor = _reuse(self.store, job.session, job.prompt)
                shared = max(min(_common_prefix(prompt, job.prompt), len(job.prompt) - 1) for prompt in peers)
                if shared > reuse + WAIT_TO_SHARE:
                    later.append(job)
                    continue
            job.begin(self.store)
            ready.append(job)
            encoding.append((job.session, job.prompt))
        return ready, later

    def _forward(self, jobs: list[_Job]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """The packed forward; the logits wanted, and each job's rows of them."""
        device = self.backend.device
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        columns: list[int] = []
        plan: list[tuple[int, int, int, int, torch.Tensor | None]] = []
        keep: list[int] = []
        rows: list[tuple[int, int]] = []
        steering: list[tuple[Any, str, int]] = []  # (steering, phase, tokens) runs: each job's steered_rows
        for job in jobs:
            ids, at, start, mask, wanted = job.feed()
            steering += job.steered_rows(len(ids))
            slot = self.store.slot_of(job.session)
            assert slot is not None
            first = len(tokens)
            tokens += ids
            positions += at
            slots += [slot] * len(ids)
            columns += range(start, start + len(ids))
            plan.append((slot, first, len(tokens), start + len(ids), mask))
            rows.append((len(keep), len(keep) + len(wanted)))
            keep += [first + w for w in wanted]
            kind = "score" if isinstance(job, _ScoreJob) else "decode" if len(ids) == 1 else "prompt"
            self.tokens[kind] += len(ids)
        self.store.reserve(max(columns) + 1)
        self.store.writes = (torch.tensor(slots, device=device), torch.tensor(columns, device=device))
        config = self.backend.model.config
        before = config._attn_implementation
        config._attn_implementation = LANES  # these forwards only (the device lock is held)
        steerer = self.backend.steerer
        try:
            with steerer.per_token(steering) if steerer is not None else contextlib.nullcontext():
                out = self.backend.model(
                    input_ids=torch.tensor([tokens], device=device),
                    position_ids=torch.tensor([positions], device=device),
                    attention_mask=torch.zeros(1, 1, 1, 1, device=device),  # 4D: taken as given (lanes mask per call)
                    past_key_values=self.store,
                    use_cache=True,
                    logits_to_keep=torch.tensor(keep, device=device),
                    lane_plan=plan,
                )
        finally:
            config._attn_implementation = before
            self.store.writes = None
        self.forwards += 1
        return out.logits[0], rows

    def abort(self) -> list[Any]:
        jobs, self.waiting, self.decoding = [*self.decoding, *self.waiting], [], []
        for job in jobs:
            self.store.forget(job.session)
        return [job.call for job in jobs]

    def release(self, sessions: list[PrefixSession]) -> None:
        with self.backend.lock, torch.inference_mode():
            for session in sessions:
                self.store.detach(session)
