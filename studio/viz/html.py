"""Safe HTML for traces, tokens, prompts and model cards.

Everything a model, an environment or a person wrote is untrusted: every piece of text goes
through :func:`esc` (``html.escape`` with quotes) before it touches markup, and no attribute
ever carries raw text. Styling lives in ``studio/viz/studio.css`` (classes prefixed ``as-``).
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Protocol

from studio.trace import TAKEN, Episode, Output, Step, TokenInfo

if TYPE_CHECKING:
    from studio.episodes.live import LiveOutput

COLOR_MODES = ("logprob", "entropy")
#: Entropy (nats) at which a token is coloured fully "uncertain".
ENTROPY_FULL = 4.0


def esc(text: Any) -> str:
    """Text as HTML text (never markup)."""
    return html.escape("" if text is None else str(text), quote=True)


def plural(count: int, noun: str) -> str:
    """``1 record``, ``2 records`` (the count formatted by :func:`num`, so escaped)."""
    return f"{num(count)} {noun}{'' if count == 1 else 's'}"


def num(value: Any, spec: str = "") -> str:
    """A number formatted with ``spec`` as HTML text. Anything that is not a number (a record
    that skipped validation) is shown escaped as it is: it never becomes markup, never raises."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return esc(format(value, spec))
        except ValueError:  # e.g. a float spec for an int: show it plainly
            return esc(value)
    return esc(value)


def token_colour(token: TokenInfo, mode: str) -> str:
    """A background colour: probability red (unlikely) to green (likely), or entropy white to violet."""
    if mode == "entropy":
        entropy = token.entropy
        if entropy is None and token.top:  # a served token: the entropy over its top k (a lower bound)
            entropy = top_k_summary(token.top)[1]
        level = min(max((entropy or 0.0) / ENTROPY_FULL, 0.0), 1.0)
        return f"rgba(124, 58, 237, {num(0.08 + 0.6 * level, '.2f')})"
    probability = math.exp(min(token.logprob, 0.0))
    return f"hsla({num(120 * probability, '.0f')}, 75%, 50%, 0.30)"


ORIGIN_NOTES = {
    "forced": "written by the policy before the model's turn",
    "inserted": "inserted by the policy",
    "scored": "chosen by scoring the valid actions",
}


def token_title(token: TokenInfo) -> str:
    """The hover text of a token: the token, its probability, logprob and entropy, who wrote it, and
    the model's most likely tokens at its position (where the backend reports them)."""
    parts = [repr(token.text), f"p={math.exp(min(token.logprob, 0.0)):.3f}", f"logprob={token.logprob:.3f}"]
    if token.entropy is not None:
        parts.append(f"entropy={token.entropy:.3f}")
    elif token.top:  # a server's answer: only the top k are known, so say what is and what it covers
        mass, entropy = top_k_summary(token.top)
        parts.append(f"top-{len(token.top)} mass={mass:.3f} · entropy over the top {len(token.top)}={entropy:.3f}")
    if token.origin in ORIGIN_NOTES:
        parts.append(ORIGIN_NOTES[token.origin])
    title = " · ".join(parts)
    if token.top:  # one line each (the tooltip keeps line breaks)
        shown = "\n".join(f"  {a.text!r}  p={math.exp(min(a.logprob, 0.0)):.3f}" for a in token.top)
        title += f"\nmost likely here:\n{shown}"
    return title


def top_k_summary(top: list[Any]) -> tuple[float, float]:
    """The probability mass of the top-k alternatives and the entropy (nats) of the top k renormalised:
    what a server's top-k logprobs tell about the distribution (the full entropy is at least as high
    when the rest of the vocabulary holds mass)."""
    probabilities = [math.exp(min(a.logprob, 0.0)) for a in top]
    mass = sum(probabilities)
    if mass <= 0:
        return 0.0, 0.0
    shares = [p / mass for p in probabilities if p > 0]
    return mass, -sum(p * math.log(p) for p in shares)


def tokens_html(tokens: list[TokenInfo], mode: str = "logprob") -> str:
    """Tokens, each coloured by its logprob or entropy, with the numbers on hover; the ones the
    policy wrote (not sampled by the model) are marked."""
    spans = [
        f'<span class="as-tok{"" if t.origin == "model" else " as-tok-" + esc(t.origin)}" style="background:{token_colour(t, mode)}" '
        f'data-tip="{esc(token_title(t))}">{esc(t.text)}</span>'
        for t in tokens
    ]
    return f'<span class="as-tokens">{"".join(spans)}</span>'


def token_legend(mode: str = "logprob") -> str:
    """What the token colours mean (shown once above the trace)."""
    if mode == "entropy":
        scale = '<span class="as-swatch" style="background:rgba(124,58,237,0.08)"></span> certain (0 nats) → <span class="as-swatch" style="background:rgba(124,58,237,0.68)"></span> uncertain (≥ 4 nats)'
    else:
        scale = '<span class="as-swatch" style="background:hsla(0,75%,50%,0.3)"></span> unlikely (p≈0) → <span class="as-swatch" style="background:hsla(120,75%,50%,0.3)"></span> likely (p≈1)'
    return f'<div class="as-legend">Token colour: {scale} · <span class="as-tok as-tok-forced">underlined</span>: written by the policy, not sampled · hover a token for its numbers</div>'


class OutputLike(Protocol):
    """What every output record has (:class:`~studio.trace.Output`, a Step, a Candidate, an annotation side)."""

    raw: str
    thought: str | None
    action: str | None
    tokens: list[TokenInfo] | None
    valid: bool
    invalid_reason: str | None


def output_html(output: OutputLike, mode: str) -> str:
    """What a policy produced: its tokens coloured (or its text), the action, and why it was invalid."""
    raw, thought, action, tokens = output.raw, output.thought, output.action, output.tokens
    valid, invalid_reason = output.valid, output.invalid_reason
    if tokens:
        spelled = "".join(t.text for t in tokens)
        # Records made before token origins: the text the policy wrote first (e.g. "Thought:") is shown plain.
        written = "" if spelled == raw else raw[: len(raw) - len(spelled)] if raw.endswith(spelled) else ""
        body = f'<span class="as-text">{esc(written)}</span>{tokens_html(tokens, mode)}'
    else:
        body = f'<span class="as-text">{esc(raw if raw and raw != action else (thought or ""))}</span>'
    badge = (
        ""
        if valid
        else f'<div class="as-invalid"><span class="as-badge as-bad">invalid</span> {esc(invalid_reason or "")}</div>'
    )
    shown_action = esc(action) if action is not None else '<span class="as-muted">(no action parsed)</span>'
    return (
        f'<div class="as-output"><div class="as-generated">{body}</div>'
        f'<div class="as-action"><span class="as-label">Action</span> <code>{shown_action}</code></div>{badge}</div>'
    )


def live_card(live: LiveOutput, mode: str = "logprob") -> str:
    """The step being decided: its output as far as it is written (replaced by the step card when done)."""
    meta = [f"writing… {num(live.seconds, '.1f')} s", plural(len(live.tokens), "token")]
    if live.rows > 1:
        meta.append(f"{num(live.rows)} outputs at once (the first shown)")
    body = tokens_html(live.tokens, mode) if live.tokens else '<span class="as-muted">reading the prompt…</span>'
    return (
        f'<div class="as-step as-live" data-step="{num(live.index)}" data-live-tokens="{num(len(live.tokens))}">'
        f'<div class="as-head"><span class="as-index">Step {num(live.index)}</span> <span class="as-meta">{" · ".join(meta)}</span></div>'
        f'<div class="as-output"><div class="as-generated">{body}<span class="as-caret"></span></div></div></div>'
    )


def step_card(step: Step, selected: bool = False, mode: str = "logprob", open_observation: bool = True) -> str:
    """One step of the timeline: who acted, the output, the environment's answer, the reward.

    The observation after the step is folded unless ``open_observation`` (the newest and the
    selected step): a trace of 30 steps is not 30 copies of a map. A fold says whether the
    observation changed."""
    classes = "as-step" + (" as-selected" if selected else "") + ("" if step.valid else " as-invalid-step")
    seconds = step.timing.get("policy_s")
    meta = [esc(step.actor or "?"), f"reward {num(step.reward, '+g')}"]
    if seconds is not None:
        meta.append(f"{num(seconds, '.2f')} s")
    if step.candidates:
        meta.append(f"{num(len(step.candidates) + 1)} outputs")
    if step.terminated or step.truncated:
        meta.append("terminated" if step.terminated else "truncated")
    steered = steering_badge(step)
    thought = (
        f'<div class="as-thought"><span class="as-label">Thought</span> {esc(step.thought)}</div>'
        if step.thought and not step.tokens
        else ""
    )
    change = "unchanged" if step.next_observation == step.observation else "changed"
    observation = (
        f'<div class="as-obs"><span class="as-label">Observation</span><pre>{esc(step.next_observation)}</pre></div>'
        if open_observation
        else f'<details class="as-obs"><summary><span class="as-label">Observation</span> {change} (show)</summary><pre>{esc(step.next_observation)}</pre></details>'
    )
    return (
        f'<div class="{classes}" data-step="{num(step.index)}" data-policy-ms="{num(1000 * (seconds or 0), ".1f")}" '
        f'data-first-token-ms="{num(1000 * step.timing.get("first_token_s", 0.0), ".1f")}">'
        f'<div class="as-head"><span class="as-index">Step {num(step.index)}</span> <span class="as-meta">{" · ".join(meta)}</span>{steered}</div>'
        f"{thought}{output_html(step, mode)}"
        f"{observation}</div>"
    )


def steering_badge(step: Step) -> str:
    """A steered step's mark: the vector, its layers and ALPHA (empty for an unsteered step)."""
    record = step.extra.get("steering")
    if not isinstance(record, dict):
        return ""
    layers = ",".join(str(layer) for layer in record.get("layers", []) if isinstance(layer, int))
    title = f"steered by vector {record.get('vector')} (sha256 {str(record.get('sha256', ''))[:12]}) after layer(s) {layers}, positions {record.get('positions')}"
    return (
        f' <span class="as-badge as-steered" title="{esc(title)}">steered {esc(record.get("vector"))}'
        f"@{esc(layers)} α={num(record.get('alpha'), 'g')}</span>"
    )


def empty_state(episode: Episode | None) -> str:
    """What to do first, for the episode that is open (its environment and who acts)."""
    if episode is None:
        ready = "no episode is open yet"
    else:
        model = (episode.model or {}).get("id")
        actor = (
            f"the {esc(episode.policy)} policy with the model {esc(model)}"
            if model
            else f"the {esc(episode.policy)} policy"
        )
        ready = f"<b>{esc(episode.env)}</b> (seed {num(episode.seed)}) is ready for {actor}"
    return (
        '<div class="as-empty"><h3>Nothing has happened yet</h3>'
        f"<p>Press <b>Step</b> (or the <kbd>S</kbd> key) and the agent takes its first action: {ready}. "
        "Change the environment, seed or policy on the left, then <b>Reset</b>. "
        "<b>Run to end</b> plays the episode; <b>Stop</b> interrupts it, also mid-generation.</p></div>"
    )


def episode_header(episode: Episode, read_only: bool = False) -> str:
    model = (episode.model or {}).get("id")
    status = (
        "running"
        if not episode.done
        else "success"
        if episode.success
        else "failure"
        if episode.success is False
        else "ended"
    )
    parts = [
        esc(episode.env),
        *([f"seed {esc(episode.seed)}"] if episode.seed is not None else []),
        *([f"from {esc(episode.source.get('format'))}"] if episode.source else []),
        esc(episode.policy),
        *([esc(model)] if model else []),
        f"{num(episode.length)} steps",
        f"return {num(episode.total_return, 'g')}",
        status,
    ]
    if episode.end_reason:
        parts.append(esc(episode.end_reason))
    if episode.parent_id:
        parts.append(f"fork of {esc(episode.parent_id[:8])} at step {esc(episode.forked_at)}")
    badge = '<span class="as-badge">read-only</span> ' if read_only else ""
    return f'<div class="as-episode-head">{badge}{" · ".join(parts)}</div>'


def timeline_html(
    episode: Episode | None, selected: int | None = None, mode: str = "logprob", read_only: bool = False
) -> str:
    """The whole episode as a timeline of step cards (newest last) under its task, or the empty state."""
    if episode is None or not episode.steps:
        head = episode_header(episode, read_only) + task_line(episode) if episode is not None else ""
        return f'<div class="as-timeline">{head}{empty_state(episode)}</div>'
    last = episode.length - 1
    cards = "".join(
        step_card(step, step.index == selected, mode, step.index in (selected, last)) for step in episode.steps
    )
    legend = token_legend(mode) if any(step.tokens for step in episode.steps) else ""
    head = f'<div class="as-trace-head">{episode_header(episode, read_only)}{task_line(episode)}{legend}</div>'  # stays in view (sticky)
    return f'<div class="as-timeline" data-steps="{num(episode.length)}">{head}{cards}</div>'


def task_line(episode: Episode) -> str:
    """The task, always in view above the trace (it is in the first observation only)."""
    return (
        f'<div class="as-task-line"><span class="as-label">Task</span> {esc(episode.instruction)}</div>'
        if episode.instruction
        else ""
    )


def candidate_html(output: Output, mode: str, score: str = "") -> str:
    """One output of a step, titled by its name (and the verifier's score of it)."""
    title = esc(output.name) + (f' <span class="as-muted">· {score}</span>' if score else "")
    return f'<div class="as-cand"><div class="as-cand-title">{title}</div>{output_html(output, mode)}</div>'


def verifier_scores(step: Step) -> tuple[str, list[str]] | None:
    """The best-of-K verifier's line and each output's score (as HTML) when one picked the
    step's action; None otherwise, or when the record does not fit the step (an imported file)."""
    record = step.extra.get("verifier") if isinstance(step.extra, dict) else None
    if not isinstance(record, dict):
        return None
    scores = record.get("scores")
    outputs = 1 + len(step.candidates)
    if not isinstance(scores, list) or len(scores) != outputs:
        return None
    if not all(s is None or (isinstance(s, (int, float)) and not isinstance(s, bool)) for s in scores):
        return None
    name = esc(str(record.get("name", "?"))[:40])
    shown = [f"{name} {num(s, '.3g')}" if s is not None else f"{name}: not scored" for s in scores]
    pick = record.get("policy_pick")
    line = f"Picked among {num(outputs)} outputs by the <b>{name}</b> verifier"
    if isinstance(pick, str) and pick != TAKEN:
        line += f" (the policy's own pick was {esc(pick[:40])})"
    return line + ".", shown


def candidates_html(step: Step | None, mode: str = "logprob") -> str:
    """The outputs sampled at a step, side by side (the one taken first)."""
    if step is None:
        return '<div class="as-muted">Select a step to see its candidates.</div>'
    if not step.candidates:
        return f'<div class="as-muted">Step {num(step.index)} has one output (sample K &gt; 1 candidates to compare several).</div>'
    verified = verifier_scores(step)
    scores = verified[1] if verified else [""] * (1 + len(step.candidates))
    cards = [candidate_html(output, mode, score) for output, score in zip(step.outputs(), scores)]
    line = f'<div class="as-muted">{verified[0]}</div>' if verified else ""
    return f'{line}<div class="as-cands">{"".join(cards)}</div>'


def prompt_html(step: Step | None) -> str:
    """The full prompt a model saw at a step, message by message."""
    if step is None:
        return ""
    if not step.prompt:
        return f'<div class="as-muted">Step {num(step.index)} was taken by {esc(step.actor or "someone")}: no model prompt.</div>'
    blocks = []
    for message in step.prompt:
        content = message.get("content")
        if isinstance(content, list):  # image-text models: parts
            content = "".join(
                "[image]" if part.get("type") == "image" else str(part.get("text", "")) for part in content
            )
        blocks.append(
            f'<div class="as-msg as-{esc(message.get("role", ""))}"><div class="as-role">{esc(message.get("role", ""))}</div><pre>{esc(content)}</pre></div>'
        )
    return f'<div class="as-prompt">{"".join(blocks)}</div>'


CARD_FIELDS = [
    ("id", "model"),
    ("engine", "engine"),
    ("served_model", "served model"),
    ("architecture", "architecture"),
    ("parameters", "parameters"),
    ("layers", "layers"),
    ("heads", "heads"),
    ("kv_heads", "key/value heads"),
    ("context_length", "context length"),
    ("device", "device"),
    ("dtype", "dtype"),
    ("memory_mb", "memory (MB)"),
    ("load_seconds", "load time (s)"),
    ("source", "source"),
]


def schemes_html(schemes: list[dict[str, Any]]) -> str:
    """The model name schemes this studio knows (a table), and whether the browser may use each."""
    rows = "".join(
        f"<tr><td><code>{esc(row['example'])}</code></td><td>{esc(row['summary'])}</td><td>{esc(row.get('from_the_browser', 'yes' if row['web'] else 'no'))}</td></tr>"
        for row in schemes
    )
    return (
        f'<table class="as-card as-schemes"><tr><th>name</th><th>loads</th><th>from the browser</th></tr>{rows}</table>'
    )


def model_card_html(info: dict[str, Any] | None, slot: str) -> str:
    """A loaded model's card, or what to do when the slot is empty."""
    if not info:
        return f'<div class="as-card as-muted">Slot {esc(slot)} is empty. Load <code>default</code>, a hub id or a local folder.</div>'
    rows = []
    for key, label in CARD_FIELDS:
        value = info.get(key)
        if value is None or value == "":
            continue  # not known for this kind of model (a served model has no local parameter count)
        if isinstance(value, float):
            value = f"{value:,.1f}"
        elif isinstance(value, int) and key == "parameters":
            value = f"{value:,}"
        rows.append(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>")
    flags = info.get("capabilities") or {}
    capabilities = ", ".join(name for name, on in flags.items() if on) or "none"
    rows.append(f"<tr><th>capabilities</th><td>{esc(capabilities)}</td></tr>")
    missing = ", ".join(name for name, on in flags.items() if not on)
    if missing:
        rows.append(f"<tr><th>not available</th><td>{esc(missing)}</td></tr>")
    if info.get("kind") == "served":
        note = "a server reports each token's top alternatives, not its whole distribution: entropy is shown over the top k, marked as such"
        rows.append(f"<tr><th>token signals</th><td>{esc(note)}</td></tr>")
    return (
        f'<div class="as-card"><div class="as-card-title">Model {esc(slot)}</div><table>{"".join(rows)}</table></div>'
    )


MESSAGE_KINDS = ("error", "warning", "info", "success")


def message_html(text: str, kind: str = "error") -> str:
    """A one-line status message, coloured by kind: error (red), warning (amber), info (neutral), success (green)."""
    kind = kind if kind in MESSAGE_KINDS else "error"
    return f'<div class="as-message as-{kind}">{esc(text)}</div>' if text else ""


# -- annotation ------------------------------------------------------------------------------------
def history_step_html(step: Step) -> str:
    thought = (
        f'<div class="as-thought"><span class="as-label">Thought</span> {esc(step.thought)}</div>'
        if step.thought
        else ""
    )
    return (
        f'<div class="as-hist"><div class="as-head"><span class="as-index">Step {num(step.index)}</span> <span class="as-meta">reward {num(step.reward, "+g")}</span></div>'
        f'<div class="as-obs"><span class="as-label">Observation</span><pre>{esc(step.observation)}</pre></div>{thought}'
        f'<div class="as-action"><span class="as-label">Action</span> <code>{esc(step.action)}</code></div></div>'
    )


def context_html(
    instruction: str, history: list[Step], observation: str, step_index: int | None, open_latest: int = 2
) -> str:
    """What both sides of a pair share, shown once and collapsible: the task and the observation
    they answer first, then the history (the latest steps open, older ones folded)."""
    where = f"at step {step_index}" if step_index is not None else "at the start"
    parts = [
        f'<div class="as-task"><span class="as-label">Task</span> {esc(instruction)}</div>',
        f'<div class="as-obs as-now"><span class="as-label">Observation {esc(where)}</span><pre>{esc(observation)}</pre></div>',
    ]
    if history:
        older, latest = history[:-open_latest] if len(history) > open_latest else [], history[-open_latest:]
        steps = plural(len(history), "earlier step")
        inner = ""
        if older:
            inner += f'<details class="as-history"><summary>Steps 0–{num(older[-1].index)}</summary>{"".join(history_step_html(s) for s in older)}</details>'
        inner += f'<div class="as-history">{"".join(history_step_html(s) for s in latest)}</div>'
        parts.append(f'<details class="as-history"><summary>History ({steps})</summary>{inner}</details>')
    return f'<details class="as-context-box" open><summary>Shared context</summary><div class="as-context">{"".join(parts)}</div></details>'


def side_html(title: str, side: Any, mode: str = "logprob") -> str:
    """One side of a pair, blind: its output at the step, or its whole trajectory and outcome."""
    if side.steps:
        outcome = "success" if side.success else ("failure" if side.success is False else "unfinished")
        steps = "".join(step_card(step, False, mode) for step in side.steps)
        body = f'<div class="as-outcome">{esc(outcome)} · return {num(side.total_return or 0, "g")} · {num(len(side.steps))} steps · {esc(side.end_reason or "")}</div><div class="as-timeline">{steps}</div>'
    else:
        body = output_html(side, mode)
    return f'<div class="as-side"><div class="as-side-title">{esc(title)}</div>{body}</div>'


def labels_html(episode: Episode | None, labels: dict[int, str], selected: int | None, mode: str = "logprob") -> str:
    """A trajectory for step labelling: every step with its label, the selected one highlighted."""
    if episode is None or not episode.steps:
        return '<div class="as-muted">Open an episode (its id, or the one in the Episode tab) to label its steps.</div>'
    cards = []
    for step in episode.steps:
        label = labels.get(step.index)
        badge = (
            f'<span class="as-badge as-label-{esc(label)}">{esc(label)}</span>'
            if label
            else '<span class="as-badge as-unlabelled">unlabelled</span>'
        )
        cards.append(
            f'<div class="as-labelled">{badge}{step_card(step, step.index == selected, mode, step.index == selected)}</div>'
        )
    return (
        f'<div class="as-timeline" data-steps="{num(episode.length)}">{episode_header(episode)}{"".join(cards)}</div>'
    )
