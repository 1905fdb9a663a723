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
import pickle
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from studio.errors import Interrupted, StudioError
from studio.models.base import (
    Backend,
    Batcher,
    CacheStats,
    Capabilities,
    GenerateCall,
    GenerateResult,
    Generation,
    Message,
    ModelCard,
    no_progress,
    PrefixSession,
    ProgressCallback,
    SamplingParams,
    ScoreCall,
    acquire_unless_stopped,
    ScoreResult,
    Stop,
    TokenListener,
)
from studio.models.hf_decode import ContinuousBatch, PreparedCall, decode, prefill, score_packed
from studio.models.hf_lanes import LaneBatcher, lanes_supported
from studio.models.hf_steering import Steerer
from studio.models.steering import steered
from studio.models.tokens import SingleTokenTexts, eos_ids, render_chat

#: Alternatives stored per token by default (the most likely first).
TOP_K = 5
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
    if requested == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
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


class TransformersBackend(Backend):
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
        try:  # steering and the residual stream need the decoder blocks
            self.steerer: Steerer | None = Steerer(self.model)
        except StudioError:
            self.steerer = None
        self.capabilities = Capabilities(
            top_alternatives=True,
            logprobs=True,
            scoring=True,
            attention=True,
            images=processor is not None,
            prefix_reuse=True,
            local_device=True,
            batched_generate=True,
            internals=self.steerer is not None,
        )
        self.eos_ids = self._eos_ids()
        #: Alternatives kept per generated or scored token (the trace's hover shows them).
        self.top_k = TOP_K
        self.token_text = SingleTokenTexts(tokenizer.decode)  # a token's text alone, for alternatives
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
        adapter: str | None = None,
    ) -> TransformersBackend:
        """Load a causal LM or an image-text-to-text model from a folder (or a cached hub id); ``adapter``: a
        trained LoRA adapter's folder, merged into the weights (every path then sees one plain model)."""
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )
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
            if (
                not image_text
                and model_type not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                and not trust_remote_code
            ):
                raise StudioError(
                    f"Model '{name}' ({type(config).__name__}) is neither a causal LM nor an image-text-to-text model."
                )
            progress(0.15, "loading the processor" if image_text else "loading the tokenizer")
            processor = AutoProcessor.from_pretrained(path, **common) if image_text else None
            tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(path, **common)
            progress(0.3, f"loading the weights ({torch_dtype}) on {device_name}")
            auto = AutoModelForImageTextToText if image_text else AutoModelForCausalLM
            model = auto.from_pretrained(path, dtype=torch_dtype, **common)
            if adapter is not None:
                from peft import PeftModel

                progress(0.8, "merging the trained adapter")
                model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
            progress(0.85, f"moving to {device_name}")
            model = model.to(device_name)
        except torch.OutOfMemoryError:
            gc.collect()
            raise StudioError(
                f"Out of memory loading '{name}' on {device_name}: try a smaller dtype, a smaller model or --device cpu."
            ) from None
        except pickle.UnpicklingError:  # torch.load(weights_only=True) met something other than tensors
            raise StudioError(
                f"Could not load '{name}': its PyTorch weights file holds more than tensors, and loading it could run code; use a safetensors copy."
            ) from None
        except (
            OSError,
            ValueError,
            KeyError,
            RuntimeError,
        ) as exc:  # missing files, unknown architecture, remote code refused, shape mismatch
            raise StudioError(f"Could not load '{name}': {_first_line(exc)}") from None
        progress(1.0, "ready")
        return cls(
            model,
            tokenizer,
            processor,
            model_id=name,
            source=source,
            load_seconds=time.perf_counter() - started,
            lock=lock,
        )

    def _eos_ids(self) -> set[int]:
        return eos_ids(self.tokenizer, getattr(self.model, "generation_config", None))

    @property
    def card(self) -> ModelCard:
        return self._card

    def _model_card(self) -> ModelCard:
        text_config = self.model.config.get_text_config()
        parameters = sum(p.numel() for p in self.model.parameters())
        memory = sum(p.numel() * p.element_size() for p in self.model.parameters())
        pick = lambda *names: next(
            (getattr(text_config, n) for n in names if getattr(text_config, n, None) is not None), None
        )  # noqa: E731
        return ModelCard(
            id=self.model_id,
            source=self.source,
            capabilities=self.capabilities,
            architecture=(self.model.config.architectures or [type(self.model).__name__])[0],
            kind="image-text-to-text" if self.processor is not None else "causal-lm",
            parameters=parameters,
            layers=pick("num_hidden_layers", "n_layer"),
            heads=pick("num_attention_heads", "n_head"),
            kv_heads=pick("num_key_value_heads", "num_attention_heads", "n_head"),
            context_length=int(pick("max_position_embeddings", "n_positions") or 2048),
            vocab_size=pick("vocab_size"),
            device=self.device,
            dtype=str(self.dtype).removeprefix("torch."),
            memory_mb=round(memory / 2**20, 1),
            load_seconds=round(self.load_seconds, 2),
        )

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
        return render_chat(self.tokenizer, messages, assistant_prefix, owner=self.processor)

    def encode(
        self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None
    ) -> tuple[list[int], dict[str, Any]]:
        """Token ids of the rendered chat, plus model inputs for its images (image-text models)."""
        text = self.render(messages, assistant_prefix)
        if self.processor is not None and images:
            batch = self.processor(text=[text], images=list(images), return_tensors="pt")
            extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
            return batch["input_ids"][0].tolist(), extra
        return self.tokenizer(text, add_special_tokens=False)["input_ids"], {}

    def image_runs(self, ids: list[int]) -> list[int]:
        """Start index of each run of image placeholder tokens."""
        if self.image_token_id is None:
            return []
        return [
            i for i, t in enumerate(ids) if t == self.image_token_id and (i == 0 or ids[i - 1] != self.image_token_id)
        ]

    # -- forward passes ------------------------------------------------------------------------------
    def generate(
        self,
        messages: list[Message],
        n: int = 1,
        sampling: SamplingParams | None = None,
        stop: list[Stop] | None = None,
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        should_stop: Callable[[], bool] | None = None,
        assistant_prefix: str = "",
        on_token: TokenListener | None = None,
    ) -> GenerateResult:
        """Sample ``n`` continuations in one batch that shares the prompt's cache.

        ``on_token(row, token)`` sees each token as it is drawn (before stop strings are cut).
        """
        call = GenerateCall(messages, n, sampling, stop, images, session, should_stop, assistant_prefix, on_token)
        prepared = self._prepare(call)
        if not acquire_unless_stopped(self.lock, prepared.should_stop):  # Stop while another session decodes
            return GenerateResult(
                [Generation("", [], "interrupted") for _ in range(n)], CacheStats(prompt_tokens=len(prepared.ids))
            )
        try:
            with torch.inference_mode(), self._steered(call):
                return decode(self, prepared)
        except torch.OutOfMemoryError:
            prepared.session.reset()
            raise StudioError(self._out_of_memory()) from None
        finally:
            self.lock.release()

    def generate_many(self, calls: list[GenerateCall]) -> list[GenerateResult | StudioError]:
        """Decode several callers' prompts as one batch (a :class:`TransformersBatcher` they all join
        at once). A prompt that cannot be encoded is that call's error; the rest run."""
        return self.open_batch().answer(calls)

    def open_batch(self, pooled: bool = False) -> Batcher:
        """Continuous batching (:class:`TransformersBatcher`); for a pool, with a model whose forwards
        can be packed, every member's generate and score calls in one forward a step (:class:`LaneBatcher`)."""
        if pooled and lanes_supported(self):
            return LaneBatcher(self)
        return TransformersBatcher(self)

    def _prepare(self, call: GenerateCall) -> PreparedCall:
        ids, extra = self.encode(call.messages, call.assistant_prefix, call.images)
        return PreparedCall(
            ids=ids,
            extra=extra,
            images=call.images,
            n=call.n,
            sampling=call.sampling or SamplingParams(),
            stop=[s for s in (call.stop or []) if s],
            session=call.session if call.session is not None else PrefixSession(),
            should_stop=call.should_stop or (lambda: False),
            on_token=call.on_token,
        )

    def _prepare_score(self, call: ScoreCall) -> tuple[list[int], dict[str, Any], list[list[int]]]:
        """A score call's prompt ids, image inputs and continuation ids (each closed by an end of turn
        when ``end_with_eos``); an empty continuation is refused."""
        ids, extra = self.encode(call.messages, call.assistant_prefix, call.images)
        eos = sorted(self.eos_ids)[:1] if call.end_with_eos else []
        pieces = [self.tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in call.continuations]
        if any(not piece for piece in pieces):
            raise StudioError("Cannot score an empty continuation.")
        return ids, extra, pieces

    def _steered(self, call: GenerateCall | ScoreCall) -> Any:
        """The call's forwards steered as its caller asked (one line for a model that cannot be steered)."""
        if call.steering is not None and self.steerer is None:
            raise StudioError(f"Model {self.model_id} cannot be steered: its decoder layers were not found.")
        return self.steerer.active(call.steering) if self.steerer is not None else steered(None)

    def internals(self) -> Any:
        """Residual streams, the logit lens and output distributions (:class:`studio.models.hf_internals.Internals`)."""
        from studio.models.hf_internals import Internals

        if self.steerer is None:
            return super().internals()
        return Internals(self)

    def _out_of_memory(self) -> str:
        return f"Out of memory while generating on {self.device}: lower the candidates, max new tokens or history."

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
        call = ScoreCall(messages, continuations, images, session, assistant_prefix, end_with_eos)
        ids, extra, pieces = self._prepare_score(call)
        if not acquire_unless_stopped(self.lock):  # Stop (the step's, see base.stopping) while another session decodes
            raise Interrupted("Stopped: the output being generated was dropped and the environment was not stepped.")
        try:
            with torch.inference_mode(), self._steered(call):
                first_logits, stats = prefill(self, session, ids, extra, images)
                result = score_packed(self, session, len(ids), first_logits, pieces)
                result.cache = stats
                return result
        finally:
            self.lock.release()

    # -- attention ---------------------------------------------------------------------------------
    def attention(
        self, messages: list[Message], output: str, images: list[np.ndarray] | None = None, **options: Any
    ) -> Any:
        """What the model attended to while producing ``output``: :func:`studio.models.hf_attention.attention`."""
        from studio.models.hf_attention import attention

        return attention(self, messages, output, images, **options)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class TransformersBatcher(Batcher):
    """Continuous batching on the transformers backend (:class:`~studio.models.hf_decode.ContinuousBatch`):
    a call is prefilled when it joins and decodes with the others from the next step; each step
    is one forward for all of them. The device lock is held per :meth:`add` and per :meth:`step`,
    so other sessions' calls get the device between steps."""

    backend: TransformersBackend

    def __init__(self, backend: TransformersBackend) -> None:
        super().__init__(backend)
        self.batch = ContinuousBatch(backend)
        self.calls: dict[int, GenerateCall] = {}  # id(lane) -> its call

    @property
    def busy(self) -> bool:
        return self.batch.busy

    def add(self, call: GenerateCall) -> GenerateResult | None:
        if call.steering is not None:  # its hooks would steer the batch's other rows: it decodes alone
            with steered(call.steering):
                return self.backend.generate(**call.kwargs())
        prepared = self.backend._prepare(call)
        with self.backend.lock, torch.inference_mode():
            try:
                lane, result = self.batch.add(prepared)
            except torch.OutOfMemoryError:
                prepared.session.reset()
                raise StudioError(self.backend._out_of_memory()) from None
        if result is None:
            self.calls[id(lane)] = call
        return result

    def step(self) -> list[tuple[GenerateCall, GenerateResult | StudioError]]:
        with self.backend.lock, torch.inference_mode():
            try:
                finished = self.batch.step()
            except torch.OutOfMemoryError:
                raise StudioError(self.backend._out_of_memory()) from None
        return [(self.calls.pop(id(lane)), result) for lane, result in finished]

    def abort(self) -> list[GenerateCall]:
        return [self.calls.pop(id(lane)) for lane in self.batch.abort()]
