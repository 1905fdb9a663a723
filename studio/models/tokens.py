"""Tokenizer-side helpers every backend that holds a tokenizer shares (no torch here): the chat
as the model sees it, each token's share of the decoded text, and where a stop string or pattern cuts.

The in-process backend and the remote one render prompts and split token texts with the same
functions, so a prompt sent to a server is token for token the one the studio would run itself.
"""

from __future__ import annotations

from typing import Any, Callable

from studio.models.base import Message, Stop, message_text
from studio.trace import TokenInfo


def render_chat(tokenizer: Any, messages: list[Message], assistant_prefix: str = "", owner: Any = None) -> str:
    """The chat as the model sees it, ending with the generation prompt (and ``assistant_prefix``).

    ``owner`` is what holds the chat template (an image-text model's processor; the tokenizer by
    default). A base model without a template gets a plain transcript."""
    owner = owner if owner is not None else tokenizer
    if getattr(owner, "chat_template", None) or getattr(tokenizer, "chat_template", None):
        text = owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        lines = [f"{m['role'].capitalize()}: {message_text(m['content'])}" for m in messages]
        text = "\n\n".join(lines) + "\n\nAssistant:"
    return text + assistant_prefix


def eos_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """The token ids that end a sequence (the tokenizer's and the generation config's)."""
    ids: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def stop_boundary(text: str, stop: list[Stop]) -> int | None:
    """Where ``stop`` ends ``text`` (the earliest hit), if it does: a stop string's start, or a
    pattern's first match's last group's start (the match's start without a group)."""
    hits = []
    for s in stop:
        if isinstance(s, str):
            if s and s in text:
                hits.append(text.index(s))
        elif (match := s.search(text)) is not None:
            hits.append(match.start(match.lastindex) if match.lastindex else match.start())
    return min(hits, default=None)


def stop_cut(tokens: list[TokenInfo], stop: list[Stop]) -> int | None:
    """If ``stop`` ends the tokens' text, how many tokens to keep (those wholly before the cut)."""
    boundary = stop_boundary("".join(t.text for t in tokens), stop)
    if boundary is None:
        return None
    length, keep = 0, 0
    for token in tokens:
        length += len(token.text)
        if length > boundary:
            break
        keep += 1
    return keep


class SingleTokenTexts:
    """The text of one token on its own (a top alternative's), cached: the vocabulary does not change.

    Backends hold one as ``token_text``; it is called for every alternative of every token."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.decode([token_id])
        return text


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
