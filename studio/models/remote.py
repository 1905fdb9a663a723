"""A model served by an inference engine over the OpenAI-compatible API (vLLM, SGLang).

The model is named by its server's URL: ``http://HOST:PORT/v1`` (the first served model) or
``http://HOST:PORT/v1#SERVED-ID``. An API key, where the server wants one, comes from the
environment (``AGENT_STUDIO_API_KEY``, else ``OPENAI_API_KEY``) and never from a name.

What the studio controls stays exact: the prompt is rendered here with the model's own
tokenizer and chat template (found from the served model's folder, or its hub id in the
local cache) and sent as token ids to ``/v1/completions``, so the tokens the engine runs are
the ones the in-process backend would run. What comes back:

- ``generate``: ``n`` candidates in one request (the engine batches them, and batches every
  session's requests: there is no device lock here), each token with its logprob and the
  engine's top-k alternatives, streamed so the live view and Stop work as in-process. An
  engine reports only the top k, so a token's entropy is unknown (None); the trace shows the
  top-k mass and the entropy over the top k instead, named as such.
- ``score``: each continuation token as a forced one-token generation (``allowed_token_ids``),
  all sent at once and batched by the engine: the raw logprob and top k of every token, mapped
  back exactly like the in-process ``score``, with the prompt served from the prefix cache.
- Prefix reuse is the engine's (vLLM's automatic prefix caching, SGLang's radix cache); the
  cached-token count is recorded on the step where the engine reports it.

A step with an image (a web page's screenshot) goes to the chat endpoint instead, for models whose
config has a vision tower (:mod:`studio.models.remote_images`).

The request fields beyond OpenAI's (``return_tokens_as_token_ids``, ``ignore_eos``,
``allowed_token_ids``) are vLLM's; SGLang's OpenAI endpoint takes the same shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from studio.errors import StudioError
from studio.models.base import (
    Backend,
    CacheStats,
    Capabilities,
    GenerateResult,
    Generation,
    Message,
    ModelCard,
    no_progress,
    PrefixSession,
    ProgressCallback,
    SamplingParams,
    ScoreResult,
    Stop,
    TokenListener,
)
from studio.models.server_client import (
    TOKEN_ID_PREFIX,
    ServerClient,
    engine_of,
    find_tokenizer,
    parse_server_url,
    pick_served_model,
    served_models,
)
from studio.models.replicas import connect_pool, is_replica_list, replica_urls
from studio.models.remote_images import as_completion_choice, chat_body, chat_messages, stream_body, takes_images
from studio.models.tokens import SingleTokenTexts, TokenTexts, eos_ids, render_chat, stop_cut
from studio.trace import TokenAlternative, TokenInfo

#: Alternatives asked for per token (vLLM's default cap is 20).
TOP_K = 5


# -- the backend ------------------------------------------------------------------------------


def _connect_one(address: Any, progress: ProgressCallback) -> tuple[ServerClient, dict[str, Any]]:
    """A client of the one server at ``address`` and the model it serves (the one asked for)."""
    client = ServerClient(address)
    try:
        progress(0.1, f"asking {address.base} what it serves")
        return client, pick_served_model(served_models(client), address.model, address.base)
    except BaseException:
        client.close()
        raise


def _same(choice: dict[str, Any]) -> dict[str, Any]:
    return choice


class OpenAIBackend(Backend):
    """A model served over the OpenAI-compatible completions API, with its tokenizer loaded here."""

    no_attention_reason = "not available from a remote engine"

    def __init__(
        self,
        client: ServerClient,
        served: dict[str, Any],
        tokenizer: Any,
        *,
        name: str,
        engine: dict[str, str] | None = None,
        load_seconds: float = 0.0,
    ) -> None:
        self.client = client
        self.served_id = str(served["id"])
        self.tokenizer = tokenizer
        self.engine = engine or {"engine": "OpenAI-compatible", "version": ""}
        self.top_k = TOP_K
        self.eos_ids = eos_ids(tokenizer)
        # A served image-text model sees frames through the chat endpoint, which cannot score given
        # tokens exactly: no scoring (score mode, the forced Thought:'s logprobs) for it.
        images = takes_images(tokenizer)
        self.capabilities = Capabilities(logprobs=True, scoring=not images, top_alternatives=True, images=images)
        self.token_text = SingleTokenTexts(tokenizer.decode)
        # vLLM says; else the tokenizer's limit when it states a real one (1e30 means none), else 2048
        max_len, hint = served.get("max_model_len"), getattr(tokenizer, "model_max_length", 0)
        context = max_len if isinstance(max_len, int) and max_len > 0 else int(hint) if 0 < hint < 10**7 else 2048
        engine_name = self.engine["engine"] + (f" {self.engine['version']}" if self.engine.get("version") else "")
        self._card = ModelCard(
            id=name,
            source=client.address.base,
            capabilities=self.capabilities,
            architecture=f"served by {engine_name}: {self.served_id}",
            kind="served",
            context_length=context,
            vocab_size=len(tokenizer),
            device=f"{self.engine['engine']} server",
            dtype="server's",
            load_seconds=round(load_seconds, 2),
        )

    @classmethod
    def connect(cls, name: str, progress: ProgressCallback = no_progress) -> OpenAIBackend:
        """Connect to the server ``name`` names, pick the served model and load its tokenizer."""
        started = time.perf_counter()
        if is_replica_list(name):  # several servers of one model (studio.models.replicas)
            progress(0.1, "asking each replica what it serves")
            client, served = connect_pool(replica_urls(name))
        else:
            client, served = _connect_one(parse_server_url(name), progress)
        try:
            engine = engine_of(client)
            tokenizer = find_tokenizer(served, progress)
        except BaseException:
            client.close()
            raise
        progress(1.0, "ready")
        return cls(client, served, tokenizer, name=name, engine=engine, load_seconds=time.perf_counter() - started)

    @property
    def card(self) -> ModelCard:
        return self._card

    @property
    def info(self) -> dict[str, Any]:
        data = self._card.to_dict()
        data.update(
            engine=self.engine["engine"], engine_version=self.engine.get("version", ""), served_model=self.served_id
        )
        return data

    def unload(self) -> None:
        self.client.close()

    # -- prompts ----------------------------------------------------------------------------
    def render(self, messages: list[Message], assistant_prefix: str = "") -> str:
        return render_chat(self.tokenizer, messages, assistant_prefix)

    def encode(
        self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None
    ) -> tuple[list[int], dict[str, Any]]:
        return self.tokenizer(self.render(messages, assistant_prefix), add_special_tokens=False)["input_ids"], {}

    def _check_images(self, images: list[np.ndarray] | None) -> None:
        if images and not self.capabilities.images:
            raise StudioError(
                f"Model {self._card.id} takes text only (its config has no vision tower): no image is sent to it."
            )

    def _check_scoring(self) -> None:
        if not self.capabilities.scoring:
            raise StudioError(
                f"Model {self._card.id} is a served image-text model: scoring is not offered (use action mode generate)."
            )

    # -- generation ---------------------------------------------------------------------------
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
        """``n`` continuations in one streamed request; each token with its logprob and the top k."""
        self._check_images(images)
        sampling = sampling or SamplingParams()
        stop = [s for s in (stop or []) if s]
        should_stop = should_stop or (lambda: False)
        ids, _ = self.encode(messages, assistant_prefix)
        strings = [s for s in stop if isinstance(s, str)]
        patterns = [s for s in stop if not isinstance(s, str)]  # engines take strings: patterns are applied here
        if images:  # the chat endpoint, with the frames as image parts (studio.models.remote_images)
            endpoint, read = "/chat/completions", as_completion_choice
            chat = chat_messages(messages, images, assistant_prefix)
            body = chat_body(self.served_id, chat, n, sampling, self.top_k, strings, bool(assistant_prefix))
        else:
            endpoint, read = "/completions", _same
            body = {**stream_body(self.served_id, n, sampling, strings), "prompt": ids, "logprobs": self.top_k}
        started = time.perf_counter()
        rows = [_Row(TokenTexts(self.tokenizer.decode)) for _ in range(n)]
        first_token_s: float | None = None
        usage: dict[str, Any] = {}
        interrupted = False

        def ended() -> bool:  # a Stop, or every candidate at its end (closing the stream aborts the request)
            return should_stop() or bool(patterns) and all(row.finish or stop_cut(row.tokens, patterns) for row in rows)

        answered: list[str] = []
        for event in self.client.stream(endpoint, body, ended, on_server=answered.append):
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
            for choice in map(read, event.get("choices") or []):
                index = _choice_index(choice, n, self.client.address.base)
                row = rows[index]
                for info in self._choice_tokens(choice, row.texts):
                    row.tokens.append(info)
                    if on_token is not None:
                        on_token(index, info)
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - started
                if choice.get("finish_reason"):
                    row.finish = str(choice["finish_reason"])
        if should_stop() and any(row.finish is None for row in rows):
            interrupted = True
        generations = [row.generation(stop, self.eos_ids, interrupted, sampling.ignore_eos) for row in rows]
        total = time.perf_counter() - started
        first = first_token_s if first_token_s is not None else total
        timing = {"prefill_s": first, "first_token_s": first, "decode_s": total - first, "total_s": total}
        served_by = answered[-1] if answered else None
        return GenerateResult(generations, _engine_cache(len(ids), usage), timing, served_by=served_by)

    def _choice_tokens(self, choice: dict[str, Any], texts: TokenTexts) -> list[TokenInfo]:
        logprobs = choice.get("logprobs") or {}
        tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or [None] * len(tokens)
        if not (len(tokens) == len(values) == len(tops)):
            raise StudioError(f"{self.client.address.base} sent logprobs of uneven lengths.")
        out = []
        for token, value, top in zip(tokens, values, tops):
            token_id = self._token_id(token)
            out.append(
                TokenInfo(
                    id=token_id,
                    text=texts.push(token_id),
                    logprob=_logprob(value, self.client.address.base),
                    entropy=None,  # an engine reports the top k only: see TokenInfo.top
                    top=self._alternatives(top),
                )
            )
        return out

    def _token_id(self, token: Any) -> int:
        text = str(token)
        if not text.startswith(TOKEN_ID_PREFIX) or not text[len(TOKEN_ID_PREFIX) :].isdigit():
            raise StudioError(
                f"{self.client.address.base} did not return token ids (vLLM's return_tokens_as_token_ids): the studio cannot store its tokens exactly."
            )
        return int(text[len(TOKEN_ID_PREFIX) :])

    def _alternatives(self, top: Any) -> list[TokenAlternative] | None:
        if not isinstance(top, dict):
            return None
        ranked = sorted(
            ((self._token_id(token), _logprob(value, self.client.address.base)) for token, value in top.items()),
            key=lambda pair: -pair[1],
        )[: self.top_k]
        return [TokenAlternative(id=i, text=self.token_text(i), logprob=v) for i, v in ranked]

    # -- scoring -----------------------------------------------------------------------------------
    def score(
        self,
        messages: list[Message],
        continuations: list[str],
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        assistant_prefix: str = "",
        end_with_eos: bool = False,
    ) -> ScoreResult:
        """The engine's logprobs (and top k) of each continuation's tokens after the prompt.

        Each token is one forced one-token generation: the prompt and the continuation's earlier
        tokens, ``allowed_token_ids`` = that token, ``logprobs=k``. The engine reports logprobs
        of the raw distribution (before any logits processor), so the forced token's logprob and
        the top k are the model's own; and a prompt without prompt logprobs is served from the
        engine's prefix cache, where ``echo`` (prompt logprobs) would recompute the whole prompt
        once per continuation (vLLM: 27 s vs about 1 s for 23 household actions on 2 CPU cores).
        Requests go out concurrently, each distinct (prefix, token) once: the engine batches them.
        """
        self._check_scoring()
        self._check_images(images)
        ids, _ = self.encode(messages, assistant_prefix)
        eos = sorted(self.eos_ids)[:1] if end_with_eos else []
        pieces = [self.tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in continuations]
        if any(not piece for piece in pieces):
            raise StudioError("Cannot score an empty continuation.")
        wanted = list(dict.fromkeys(tuple(piece[: j + 1]) for piece in pieces for j in range(len(piece))))
        answers = self._forced(ids, wanted)
        results = [[answers[tuple(piece[: j + 1])][0] for j in range(len(piece))] for piece in pieces]
        tops = [[answers[tuple(piece[: j + 1])][1] for j in range(len(piece))] for piece in pieces]
        cached = min((answer[2] for answer in answers.values() if answer[2] is not None), default=None)
        usage = {"prompt_tokens_details": {"cached_tokens": cached}} if cached is not None else {}
        texts = [TokenTexts(self.tokenizer.decode).texts(piece) for piece in pieces]
        return ScoreResult(
            token_logprobs=results,
            tokens=pieces,
            texts=texts,
            entropies=None,
            cache=_engine_cache(len(ids), usage),
            alternatives=tops,
        )

    def _forced(
        self, ids: list[int], wanted: list[tuple[int, ...]]
    ) -> dict[tuple[int, ...], tuple[float, list[TokenAlternative], int | None]]:
        """For each continuation prefix (its last token forced): that token's logprob, the top k, cached tokens."""
        from concurrent.futures import ThreadPoolExecutor

        base = self.client.address.base

        def ask(key: tuple[int, ...]) -> tuple[float, list[TokenAlternative], int | None]:
            body = {
                "model": self.served_id,
                "prompt": ids + list(key[:-1]),
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": self.top_k,
                "allowed_token_ids": [key[-1]],
                "return_tokens_as_token_ids": True,
            }
            data = self.client.post("/completions", body)
            try:
                choice = data["choices"][0]
                logprobs = choice["logprobs"]
                token, value = logprobs["tokens"][0], logprobs["token_logprobs"][0]
                top = (logprobs.get("top_logprobs") or [None])[0]
            except (KeyError, IndexError, TypeError):
                raise StudioError(f"{base} answered a scoring request without token logprobs.") from None
            if self._token_id(token) != key[-1]:
                raise StudioError(f"{base} ignored allowed_token_ids: it cannot score given text this way.")
            alternatives = self._alternatives(top) or []
            if alternatives and all(a.logprob == float("-inf") for a in alternatives if a.id != key[-1]):
                raise StudioError(
                    f"{base} reports logprobs after processing (--logprobs-mode): start it with raw_logprobs to score."
                )
            details = (data.get("usage") or {}).get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            return _logprob(value, base), alternatives, cached if isinstance(cached, int) else None

        with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:
            return dict(zip(wanted, pool.map(ask, wanted)))


@dataclass
class _Row:
    """One candidate being streamed."""

    texts: TokenTexts
    tokens: list[TokenInfo] = field(default_factory=list)
    finish: str | None = None

    def generation(self, stop: list[Stop], eos: set[int], interrupted: bool, ignore_eos: bool) -> Generation:
        tokens = self.tokens
        reason = "length" if self.finish == "length" else "eos"
        if tokens and tokens[-1].id in eos and not ignore_eos:
            tokens, reason = tokens[:-1], "eos"
        kept = stop_cut(tokens, stop) if stop else None
        if kept is not None:
            tokens, reason = tokens[:kept], "stop"
        elif self.finish is None:
            reason = "interrupted" if interrupted else "length"
        return Generation(text="".join(t.text for t in tokens), tokens=tokens, finish_reason=reason)


def _choice_index(choice: dict[str, Any], n: int, base: str) -> int:
    index = choice.get("index")
    if not isinstance(index, int) or not 0 <= index < n:
        raise StudioError(f"{base} answered for a candidate that was not asked for ({index!r}).")
    return index


def _logprob(value: Any, base: str) -> float:
    """A logprob from the server, checked (None: the engine's way of saying probability 0)."""
    if value is None:
        return float("-inf")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not np.isnan(value) and value <= 1e-4:
        return min(float(value), 0.0)  # log-softmax rounding can land a hair above 0
    raise StudioError(f"{base} sent a logprob that is not a number <= 0: {str(value)[:40]!r}.")


def _engine_cache(prompt_tokens: int, usage: dict[str, Any]) -> CacheStats:
    """The engine's own prefix-cache report (``usage.prompt_tokens_details.cached_tokens``) where it gives one."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and 0 <= cached <= prompt_tokens:
        return CacheStats(
            prompt_tokens=prompt_tokens, reused_tokens=cached, encoded_tokens=prompt_tokens - cached, source="engine"
        )
    return CacheStats(prompt_tokens=prompt_tokens, reused_tokens=0, encoded_tokens=prompt_tokens, source="unreported")


def probe(url: str) -> dict[str, Any]:
    """What a server supports, for ``agent-studio models --probe URL``: its engine, the models it
    serves, their context, and whether token logprobs, top alternatives and scoring work."""
    address = parse_server_url(url)
    client = ServerClient(address, timeout=60.0)
    try:
        models = served_models(client)
        served = pick_served_model(models, address.model, address.base)
        engine = engine_of(client)
        report: dict[str, Any] = {
            "url": address.base,
            **engine,
            "models": [{"id": m["id"], "max_model_len": m.get("max_model_len"), "root": m.get("root")} for m in models],
            "model": served["id"],
        }
        checks: dict[str, Any] = {"attention": f"no: {OpenAIBackend.no_attention_reason}"}
        try:
            tokenizer = find_tokenizer(served)
            report["tokenizer"] = "found here"
        except StudioError as exc:
            report["tokenizer"] = f"not found: {exc}"
            report["supports"] = checks
            return report
        # What the studio would do with it, through the backend's own requests.
        backend = OpenAIBackend(client, served, tokenizer, name=url, engine=engine)
        chat = [{"role": "user", "content": "Say hello."}]
        try:
            tokens = backend.generate(chat, sampling=SamplingParams(max_new_tokens=2)).generations[0].tokens
            checks["logprobs"] = bool(tokens)
            checks["top_alternatives"] = bool(tokens and tokens[0].top)
        except StudioError as exc:
            checks["logprobs"] = f"no: {exc}"
        try:
            checks["scoring"] = len(backend.score(chat, [" Hello", " Hi there"]).totals) == 2
        except StudioError as exc:
            checks["scoring"] = f"no: {exc}"
        report["supports"] = checks
        return report
    finally:
        client.close()
