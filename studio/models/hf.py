"""The transformers backend: any Hugging Face causal LM or image-text-to-text model.

What makes it fast enough to step through long episodes on a CPU:

- **Prefix reuse.** A :class:`PrefixSession` keeps the KV cache of the caller's last
  prompt. A new prompt is compared token by token with the cached one; only the tokens
  after the longest common prefix are encoded (an agent's prompt grows by one step at a
  time, so that is usually one assistant turn and one observation). When the prefix
  changed (history trimmed, another system prompt) the cache is cut back and the change
  is reported in :class:`CacheStats`.
- **Batched candidates.** ``n`` samples share one prefill and one copy of the prompt's
  cache: each decode step feeds the ``n`` new tokens as one row with a mask that lets each
  candidate see the prompt and its own tokens, so the prompt's keys and values are read
  once per step, not once per candidate (decoding on a CPU is memory-bound).
- **One-pass scoring.** All continuations are packed into one sequence after the prompt
  with a block attention mask (each continuation sees the prompt and itself) and
  positions restarting at the prompt's end, so scoring every valid action costs one
  forward pass over their tokens and no copy of the prompt's cache.

The decode loop is our own (not ``model.generate``) so that every token carries the
model's log-probability and entropy under its raw distribution, stop strings cut
cleanly, and a Stop button can interrupt between tokens.
"""

from __future__ import annotations

import gc
import hashlib
import pickle
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from studio.errors import StudioError
from studio.models.base import (
    CacheStats,
    Capabilities,
    Generation,
    GenerateResult,
    Message,
    PrefixSession,
    ProgressCallback,
    SamplingParams,
    ScoreResult,
    TokenListener,
    no_progress,
)
from studio.trace import TokenInfo

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(requested: str = "auto") -> str:
    """``auto`` is cuda, then mps, then cpu; anything else is checked and returned."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise StudioError("CUDA was requested but no CUDA GPU is available; use --device cpu or auto.")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise StudioError("MPS was requested but is not available on this machine; use --device cpu or auto.")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise StudioError(f"Unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps.")
    return requested


def pick_dtype(requested: str, device: str) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU and float32 on the CPU (bf16 is slower on CPUs)."""
    if requested == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    if requested not in DTYPES:
        raise StudioError(f"Unknown dtype '{requested}': use auto, float32, bfloat16 or float16.")
    return DTYPES[requested]


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


def _stop_cut(tokens: list[TokenInfo], stop: list[str]) -> int | None:
    """If the tokens' text contains a stop string, how many tokens to keep (those wholly before it)."""
    text = "".join(t.text for t in tokens)
    hits = [text.find(s) for s in stop if s in text]
    if not hits:
        return None
    boundary, length, keep = min(hits), 0, 0
    for token in tokens:
        length += len(token.text)
        if length > boundary:
            break
        keep += 1
    return keep


class TokenTexts:
    """Each token's share of the decoded text, as tokens arrive.

    Decoding tokens one by one does not spell the sequence (a character split across byte
    tokens, a SentencePiece space); decoding a short window before and after each new token
    and keeping the difference does, so the texts of a sequence's tokens join to its decoded
    text. A token that ends in the middle of a character adds "" and the next one adds the
    whole character.
    """

    WINDOW = 6

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.start = 0  # the window's first token (decoded as context only)
        self.read = 0  # tokens whose text has been handed out

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.decode(self.ids[self.start : self.read])
        after = self.decode(self.ids[self.start :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # nothing new yet (part of a character)
        self.start, self.read = max(self.read - self.WINDOW, 0), len(self.ids)
        return after[len(before) :]

    def texts(self, tokens: list[int]) -> list[str]:
        """The texts of a whole sequence (a fresh instance's pushes)."""
        return [self.push(t) for t in tokens]


class TransformersBackend:
    """A loaded transformers model with its tokenizer (or processor)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        processor: Any = None,
        *,
        model_id: str = "in-memory",
        source: str = "in-memory",
        load_seconds: float = 0.0,
        lock: threading.Lock | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = processor
        self.model_id = model_id
        self.source = source
        self.load_seconds = load_seconds
        self.device = str(next(model.parameters()).device)
        self.dtype = next(model.parameters()).dtype
        #: Serialises use of the device: concurrent sessions queue here instead of colliding.
        self.lock = lock or threading.Lock()
        self.capabilities = Capabilities(logprobs=True, attention=True, images=processor is not None)
        self.eos_ids = self._eos_ids()
        self.image_token_id = getattr(model.config, "image_token_id", None) if processor is not None else None
        self._card = self._model_card()  # static: computed once, read at every step by policies

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str,
        *,
        model_id: str | None = None,
        source: str = "local",
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        local_files_only: bool = True,
        progress: ProgressCallback = no_progress,
        lock: threading.Lock | None = None,
    ) -> TransformersBackend:
        """Load a causal LM or an image-text-to-text model from a folder (or a cached hub id)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
        from transformers.models.auto import modeling_auto

        started = time.perf_counter()
        name = model_id or path
        device_name = pick_device(device)
        torch_dtype = pick_dtype(dtype, device_name)
        common = {"trust_remote_code": trust_remote_code, "local_files_only": local_files_only}
        if gguf_file:
            common["gguf_file"] = gguf_file
        progress(0.05, "reading the configuration")
        try:
            config = AutoConfig.from_pretrained(path, **common)
            model_type = getattr(config, "model_type", "")
            image_text = model_type in modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
            if not image_text and model_type not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not trust_remote_code:
                raise StudioError(f"Model '{name}' ({type(config).__name__}) is neither a causal LM nor an image-text-to-text model.")
            progress(0.15, "loading the processor" if image_text else "loading the tokenizer")
            processor = AutoProcessor.from_pretrained(path, **common) if image_text else None
            tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(path, **common)
            progress(0.3, f"loading the weights ({torch_dtype}) on {device_name}")
            auto = AutoModelForImageTextToText if image_text else AutoModelForCausalLM
            model = auto.from_pretrained(path, dtype=torch_dtype, **common)
            progress(0.85, f"moving to {device_name}")
            model = model.to(device_name)
        except torch.OutOfMemoryError:
            gc.collect()
            raise StudioError(f"Out of memory loading '{name}' on {device_name}: try a smaller dtype, a smaller model or --device cpu.") from None
        except pickle.UnpicklingError:  # torch.load(weights_only=True) met something other than tensors
            raise StudioError(f"Could not load '{name}': its PyTorch weights file holds more than tensors, and loading it could run code; use a safetensors copy.") from None
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # missing files, unknown architecture, remote code refused, shape mismatch
            raise StudioError(f"Could not load '{name}': {_first_line(exc)}") from None
        progress(1.0, "ready")
        return cls(model, tokenizer, processor, model_id=name, source=source, load_seconds=time.perf_counter() - started, lock=lock)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (getattr(self.tokenizer, "eos_token_id", None), getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    @property
    def info(self) -> dict[str, Any]:
        """The model card (a copy: callers may annotate it)."""
        return dict(self._card)

    def _model_card(self) -> dict[str, Any]:
        text_config = self.model.config.get_text_config()
        parameters = sum(p.numel() for p in self.model.parameters())
        memory = sum(p.numel() * p.element_size() for p in self.model.parameters())
        pick = lambda *names: next((getattr(text_config, n) for n in names if getattr(text_config, n, None) is not None), None)  # noqa: E731
        return {
            "id": self.model_id,
            "source": self.source,
            "architecture": (self.model.config.architectures or [type(self.model).__name__])[0],
            "kind": "image-text-to-text" if self.processor is not None else "causal-lm",
            "parameters": parameters,
            "layers": pick("num_hidden_layers", "n_layer"),
            "heads": pick("num_attention_heads", "n_head"),
            "kv_heads": pick("num_key_value_heads", "num_attention_heads", "n_head"),
            "context_length": pick("max_position_embeddings", "n_positions"),
            "vocab_size": pick("vocab_size"),
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "memory_mb": round(memory / 2**20, 1),
            "load_seconds": round(self.load_seconds, 2),
            "capabilities": {"logprobs": self.capabilities.logprobs, "attention": self.capabilities.attention, "images": self.capabilities.images},
        }

    @property
    def context_length(self) -> int:
        return int(self._card["context_length"] or 2048)

    def unload(self) -> None:
        """Free the weights; the backend cannot be used afterwards."""
        with self.lock:
            self.model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- prompts --------------------------------------------------------------------------------
    def render(self, messages: list[Message], assistant_prefix: str = "") -> str:
        """The chat as the model sees it, ending with the generation prompt (and ``assistant_prefix``)."""
        owner = self.processor if self.processor is not None else self.tokenizer
        if getattr(owner, "chat_template", None) or getattr(self.tokenizer, "chat_template", None):
            text = owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # a base model without a template: a plain transcript
            lines = [f"{m['role'].capitalize()}: {_text_of(m['content'])}" for m in messages]
            text = "\n\n".join(lines) + "\n\nAssistant:"
        return text + assistant_prefix

    def encode(self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None) -> tuple[list[int], dict[str, Any]]:
        """Token ids of the rendered chat, plus model inputs for its images (image-text models)."""
        text = self.render(messages, assistant_prefix)
        if self.processor is not None and images:
            batch = self.processor(text=[text], images=list(images), return_tensors="pt")
            extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
            return batch["input_ids"][0].tolist(), extra
        return self.tokenizer(text, add_special_tokens=False)["input_ids"], {}

    def _image_runs(self, ids: list[int]) -> list[int]:
        """Start index of each run of image placeholder tokens."""
        if self.image_token_id is None:
            return []
        return [i for i, t in enumerate(ids) if t == self.image_token_id and (i == 0 or ids[i - 1] != self.image_token_id)]

    # -- forward passes ------------------------------------------------------------------------------
    def _prefill(self, session: PrefixSession, ids: list[int], extra: dict[str, Any], images: list[np.ndarray] | None) -> tuple[torch.Tensor, CacheStats]:
        """Bring ``session``'s cache to ``ids`` (encoding only what is new); return the last logits (1, V)."""
        if session.owner is not self:
            session.reset()
            session.owner = self
        image_keys = [_image_key(image) for image in images or []]
        reuse = min(_common_prefix(session.token_ids, ids), len(ids) - 1)  # at least one token must run
        runs = self._image_runs(ids)
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
        new = torch.tensor([ids[reuse:]], device=self.device)
        out = self.model(input_ids=new, past_key_values=session.cache, use_cache=True, logits_to_keep=1, **inputs)
        session.cache = out.past_key_values
        session.token_ids = list(ids)
        session.image_keys = image_keys
        stats = CacheStats(prompt_tokens=len(ids), reused_tokens=reuse, encoded_tokens=len(ids) - reuse, prefix_changed=prefix_changed)
        return out.logits[:, -1, :], stats

    def generate(
        self,
        messages: list[Message],
        n: int = 1,
        sampling: SamplingParams | None = None,
        stop: list[str] | None = None,
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        should_stop: Callable[[], bool] | None = None,
        assistant_prefix: str = "",
        on_token: TokenListener | None = None,
    ) -> GenerateResult:
        """Sample ``n`` continuations in one batch that shares the prompt's cache.

        ``on_token(row, token)`` sees each token as it is drawn (before stop strings are cut).
        """
        sampling = sampling or SamplingParams()
        session = session if session is not None else PrefixSession()
        stop = [s for s in (stop or []) if s]
        ids, extra = self.encode(messages, assistant_prefix, images)
        with self.lock, torch.inference_mode():
            try:
                return self._generate(ids, extra, images, n, sampling, stop, session, should_stop or (lambda: False), on_token)
            except torch.OutOfMemoryError:
                session.reset()
                raise StudioError(f"Out of memory while generating on {self.device}: lower the candidates, max new tokens or history.") from None

    def _generate(self, ids, extra, images, n, sampling, stop, session, should_stop, on_token=None) -> GenerateResult:
        started = time.perf_counter()
        logits, stats = self._prefill(session, ids, extra, images)
        prefill_s = time.perf_counter() - started
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        cache = session.cache
        prompt_len = len(ids)
        if n > 1:
            logits = logits.expand(n, -1)
        drawn: list[list[TokenInfo]] = [[] for _ in range(n)]
        texts = [TokenTexts(self.tokenizer.decode) for _ in range(n)]
        finish: list[str | None] = [None] * n
        cut: list[int | None] = [None] * n  # kept token count once a stop string is hit
        first_token_s, fed = 0.0, 0
        for position in range(sampling.max_new_tokens):
            logprobs, entropy = _signals(logits)
            chosen = _sample(logits, sampling, generator)
            for row in range(n):
                if finish[row] is not None:
                    continue
                token = int(chosen[row])
                if token in self.eos_ids and not sampling.ignore_eos:
                    finish[row] = "eos"
                    continue
                info = TokenInfo(id=token, text=texts[row].push(token), logprob=float(logprobs[row, token]), entropy=float(entropy[row]))
                drawn[row].append(info)
                if on_token is not None:
                    on_token(row, info)
                if stop:
                    kept = _stop_cut(drawn[row], stop)
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
                out = self.model(input_ids=chosen.view(1, 1), past_key_values=cache, use_cache=True)
                logits = out.logits[:, -1, :]
            else:
                logits = self._decode_packed(chosen, cache, prompt_len, fed)
            fed += 1
        generations = []
        for row in range(n):
            tokens = drawn[row][: cut[row]] if cut[row] is not None else drawn[row]
            generations.append(Generation(text="".join(t.text for t in tokens), tokens=tokens, finish_reason=finish[row] or "length"))
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

    def _decode_packed(self, chosen: torch.Tensor, cache: Any, prompt_len: int, step: int) -> torch.Tensor:
        """One decode step for n candidates sharing one copy of the prompt's cache.

        The n new tokens go in as one row (1, n) at position ``prompt_len + step`` each; the
        cache row holds the prompt, then the candidates' tokens interleaved step by step.
        A mask lets candidate i see the prompt and its own earlier tokens only, so the
        prompt's keys and values are read once per step instead of once per candidate.
        """
        n = chosen.shape[0]
        total = prompt_len + n * (step + 1)
        allowed = torch.zeros(n, total, dtype=torch.bool, device=self.device)
        allowed[:, :prompt_len] = True
        own = prompt_len + torch.arange(step + 1, device=self.device)[None, :] * n + torch.arange(n, device=self.device)[:, None]  # (n, step+1)
        allowed.scatter_(1, own, True)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask[~allowed] = torch.finfo(self.dtype).min
        positions = torch.full((1, n), prompt_len + step, device=self.device)
        out = self.model(input_ids=chosen.view(1, n), position_ids=positions, attention_mask=mask[None, None], past_key_values=cache, use_cache=True)
        return out.logits[0]  # (n, V)

    def score(
        self,
        messages: list[Message],
        continuations: list[str],
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        assistant_prefix: str = "",
        end_with_eos: bool = False,
    ) -> ScoreResult:
        """Per-token logprobs of each continuation, all in one forward pass after the shared prompt."""
        session = session if session is not None else PrefixSession()
        ids, extra = self.encode(messages, assistant_prefix, images)
        eos = sorted(self.eos_ids)[:1] if end_with_eos else []
        pieces = [self.tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in continuations]
        if any(not piece for piece in pieces):
            raise StudioError("Cannot score an empty continuation.")
        with self.lock, torch.inference_mode():
            first_logits, stats = self._prefill(session, ids, extra, images)
            result = self._score_packed(session, len(ids), first_logits, pieces)
            result.cache = stats
            return result

    def _score_packed(self, session: PrefixSession, prompt_len: int, first_logits: torch.Tensor, pieces: list[list[int]]) -> ScoreResult:
        first, first_entropy = _signals(first_logits[:1])  # (1, V): predicts every continuation's first token
        feed = [piece[:-1] for piece in pieces]  # a continuation's last token predicts nothing we need
        total = sum(len(f) for f in feed)
        results: list[list[float]] = [[float(first[0, piece[0]])] for piece in pieces]
        entropies: list[list[float]] = [[float(first_entropy[0])] for _ in pieces]
        if total:
            packed = torch.tensor([[t for f in feed for t in f]], device=self.device)
            positions = torch.tensor([[prompt_len + i for f in feed for i in range(len(f))]], device=self.device)
            # (1, 1, Q, prompt + Q): every token sees the prompt, and the earlier tokens of its own continuation.
            allowed = torch.zeros(total, prompt_len + total, dtype=torch.bool, device=self.device)
            allowed[:, :prompt_len] = True
            start = 0
            for f in feed:
                block = torch.ones(len(f), len(f), dtype=torch.bool, device=self.device).tril()
                allowed[start : start + len(f), prompt_len + start : prompt_len + start + len(f)] = block
                start += len(f)
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            mask[~allowed] = torch.finfo(self.dtype).min
            out = self.model(input_ids=packed, position_ids=positions, attention_mask=mask[None, None], past_key_values=session.cache, use_cache=True)
            logprobs, entropy = _signals(out.logits[0])  # (Q, V), (Q,)
            start = 0
            for row, (piece, f) in enumerate(zip(pieces, feed)):
                for offset in range(len(f)):
                    results[row].append(float(logprobs[start + offset, piece[offset + 1]]))
                    entropies[row].append(float(entropy[start + offset]))
                start += len(f)
            if not _crop_to(session.cache, prompt_len):  # drop the packed tokens: the prompt stays cached
                session.reset()
        texts = [TokenTexts(self.tokenizer.decode).texts(piece) for piece in pieces]
        return ScoreResult(token_logprobs=results, tokens=pieces, texts=texts, entropies=entropies)

    # -- attention ---------------------------------------------------------------------------------
    def attention(
        self,
        messages: list[Message],
        output: str,
        images: list[np.ndarray] | None = None,
        span: str = "generated",
        instruction: str = "",
        observation: str = "",
        rollout: bool = False,
        written: list[tuple[int, int]] = (),
    ) -> Any:
        """What the model attended to while producing ``output`` after ``messages`` (one pass, bounded).

        Returns a :class:`studio.analysis.attention.AttentionMap` with the rows of ``span``
        (``action``, ``thought`` or ``generated``) for every layer and head. ``written``: the
        character ranges of ``output`` the policy wrote (in no span).
        """
        from studio.analysis.attention import AttentionMap, ROLLOUT_MAX_TOKENS, assign_segments, capture_rows, locate_parts, missing_span, query_rows

        started = time.perf_counter()
        prompt = self.render(messages)
        text = prompt + output
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
        inputs: dict[str, Any] = {}
        if self.processor is not None and images:
            batch = self.processor(text=[text], images=list(images), return_tensors="pt")
            expanded = batch["input_ids"][0].tolist()
            offsets = _expand_offsets(ids, offsets, expanded, self.image_token_id)
            ids = expanded
            inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        image_positions = [i for i, t in enumerate(ids) if self.image_token_id is not None and t == self.image_token_id]
        first_output = next((i for i, o in enumerate(offsets) if o is not None and o[1] > len(prompt)), len(ids))
        output_offsets = [(max(o[0] - len(prompt), 0), o[1] - len(prompt)) for o in offsets[first_output:]]
        rows = query_rows(output_offsets, output, span, first_output, written)
        if not rows:
            raise missing_span(span)
        span_rows = {name: [rows.index(p) for p in query_rows(output_offsets, output, name, first_output, written) if p in rows] for name in ("action", "thought", "generated")}
        if rollout and len(ids) > ROLLOUT_MAX_TOKENS:
            raise StudioError(f"Attention rollout is limited to {ROLLOUT_MAX_TOKENS} tokens; this step has {len(ids)}.")
        with self.lock:
            inputs["input_ids"] = torch.tensor([ids], device=self.device)
            weights, rolled = capture_rows(self.model, inputs, rows, rollout=rollout)
        parts = locate_parts(text, messages, instruction, observation, len(prompt))
        tokens = [text[o[0]:o[1]] if o is not None else "\u25a3" for o in offsets]
        return AttentionMap(
            tokens=tokens,
            prompt_length=first_output,
            rows=rows,
            weights=weights,
            segments=assign_segments(offsets, parts, image_positions),
            offsets=offsets,
            text=text,
            image_grid=self._image_grid(len(image_positions), len(images or [])),
            rollout=rolled,
            seconds=time.perf_counter() - started,
            span=span,
            span_rows=span_rows,
            observation_span=parts.observation,
        )

    def _image_grid(self, image_tokens: int, images: int) -> tuple[int, int] | None:
        """(rows, columns) of patches per image, for square-patch vision towers."""
        if not image_tokens or not images:
            return None
        per_image = image_tokens // images
        side = int(round(per_image**0.5))
        return (side, side) if side * side == per_image else None


def _expand_offsets(ids: list[int], offsets: list[tuple[int, int]], expanded: list[int], image_token: int | None) -> list[tuple[int, int] | None]:
    """Offsets for the processor's ids, where each image placeholder became a run of image tokens."""
    result: list[tuple[int, int] | None] = []
    position = 0
    for token, span in zip(ids, offsets):
        if token == image_token:
            run = 0
            while position + run < len(expanded) and expanded[position + run] == image_token:
                run += 1
            result.extend([None] * run)
            position += run
        else:
            result.append(span)
            position += 1
    if position != len(expanded):  # a tokenizer that splits differently: fall back to no text offsets
        return [None if t == image_token else (0, 0) for t in expanded]
    return result


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
