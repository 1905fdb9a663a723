"""The HTML and figures the panels show: untrusted text stays text, numbers land where they should."""

from __future__ import annotations

import json
import math
import re

from studio.agents.scripted import make_policy
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Candidate, Episode, Step, TokenInfo
from studio.envs import make_env
from studio.viz.html import candidates_html, model_card_html, prompt_html, timeline_html, token_colour, tokens_html
from studio.viz.plots import action_distribution_figure, path_figure, path_points, signals_figure

ATTACK = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def hostile_episode() -> Episode:
    tokens = [TokenInfo(1, "<script>", -0.1, 0.5), TokenInfo(2, "alert(3)</script>", -3.0, 2.0)]
    step = Step(
        index=0,
        observation=ATTACK,
        action=ATTACK,
        actor=ATTACK,
        raw=ATTACK,
        thought=ATTACK,
        valid=False,
        invalid_reason=ATTACK,
        next_observation=ATTACK,
        tokens=tokens,
        prompt=[
            {"role": "system", "content": ATTACK},
            {"role": ATTACK, "content": [{"type": "image"}, {"type": "text", "text": ATTACK}]},
        ],
        candidates=[Candidate(raw=ATTACK, thought=ATTACK, action=ATTACK, valid=False, invalid_reason=ATTACK)],
    )
    return Episode(env=ATTACK, seed=0, policy=ATTACK, model={"id": ATTACK}, steps=[step])


def assert_no_markup_from_text(html: str) -> None:
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html or "&lt;script&gt;" in html


def test_everything_untrusted_is_escaped() -> None:
    episode = hostile_episode()
    step = episode.steps[0]
    for html in (
        timeline_html(episode, 0),
        timeline_html(episode, 0, "entropy", read_only=True),
        candidates_html(step),
        prompt_html(step),
        model_card_html({"id": ATTACK, "architecture": ATTACK, "capabilities": {ATTACK: True}}, "A"),
        tokens_html(step.tokens),
    ):
        assert_no_markup_from_text(html)


def test_tokens_are_coloured_by_probability_or_entropy() -> None:
    sure, unsure = TokenInfo(1, "a", 0.0, 0.1), TokenInfo(2, "b", math.log(0.01), 3.9)
    assert token_colour(sure, "logprob").startswith("hsla(120,") and token_colour(unsure, "logprob").startswith(
        "hsla(1,"
    )
    low, high = token_colour(sure, "entropy"), token_colour(unsure, "entropy")
    assert float(re.findall(r"[\d.]+\)$", low)[0][:-1]) < float(re.findall(r"[\d.]+\)$", high)[0][:-1])
    html = tokens_html([sure, unsure])
    assert (
        html.count('class="as-tok"') == 2
        and 'data-tip="&#x27;b&#x27; · p=0.010 · logprob=-4.605 · entropy=3.900"' in html
    )
    forced = tokens_html([TokenInfo(3, "Thought:", -2.0, 1.0, origin="forced")])
    assert 'class="as-tok as-tok-forced"' in forced and "written by the policy" in forced


def test_timeline_shows_each_step_and_an_empty_state() -> None:
    runner = EpisodeRunner("gridworld", make_policy("expert"), config=RunnerConfig(record_frames=False))
    runner.reset(seed=0)
    assert "Nothing has happened yet" in timeline_html(runner.episode)
    runner.run(max_steps=3)
    html = timeline_html(runner.episode, selected=1)
    assert html.count('class="as-step') == 3 and 'data-steps="3"' in html
    assert re.search(r'class="as-step as-selected"[^>]*data-step="1"', html)


def test_signal_plots_have_a_point_per_step_and_overlay_dashed() -> None:
    first = EpisodeRunner("gridworld", make_policy("expert"))
    first.reset(seed=1)
    a = first.run()
    second = EpisodeRunner("gridworld", make_policy("random"))
    second.reset(seed=1)
    b = second.run(max_steps=4)
    figure = signals_figure(a, b)
    rewards = [t for t in figure.data if t.name.startswith("reward")]
    assert [len(t.x) for t in rewards] == [a.length, b.length]
    assert {t.line.dash for t in figure.data if t.type == "scatter" and t.name.startswith("return")} == {
        "solid",
        "dash",
    }
    assert signals_figure(None).layout.annotations  # the empty state says what to do


def test_the_path_follows_the_agent_over_the_map() -> None:
    runner = EpisodeRunner("gridworld", make_policy("expert"))
    runner.reset(seed=2)
    episode = runner.run()
    env = make_env("gridworld")
    points = path_points(env, episode)
    assert len(points) == episode.length + 1
    goal = env.cell_box(*episode.steps[0].state["goal"])
    assert points[-1] == ((goal[0] + goal[2]) / 2, (goal[1] + goal[3]) / 2)  # the expert ends on the goal
    figure = path_figure(make_env("gridworld"), episode)
    assert figure.data[0].type == "image" and len(figure.data[1].x) == episode.length + 1
    wiki = EpisodeRunner("wikihop", make_policy("expert"))
    wiki.reset(seed=0)
    assert path_figure(make_env("wikihop"), wiki.run()) is None  # no map to draw on


def test_action_distribution_of_a_scored_step() -> None:
    step = Step(
        index=0, observation="", action="go east", action_logprobs={"go east": math.log(0.7), "go west": math.log(0.3)}
    )
    figure = action_distribution_figure(step)
    assert sorted(figure.data[0].x) == [0.3, 0.7] or [round(x, 6) for x in sorted(figure.data[0].x)] == [0.3, 0.7]
    assert list(figure.layout.yaxis.ticktext) == [
        "go west",
        "go east (taken)",
    ]  # every bar labelled, the taken one marked
    assert list(figure.layout.yaxis.tickvals) == list(figure.data[0].y)
    many = Step(index=0, observation="", action="a7", action_logprobs={f"a{i}": math.log(1 / 30) for i in range(30)})
    assert len(action_distribution_figure(many).layout.yaxis.ticktext) == 30
    assert action_distribution_figure(Step(index=0, observation="", action="x")) is None


def test_text_written_before_generation_is_shown_plain_before_the_tokens() -> None:
    from studio.trace import Output
    from studio.viz.html import output_html

    tokens = [TokenInfo(1, " east", -0.2, 0.3), TokenInfo(2, ".\nAction: go east", -0.1, 0.2)]
    output = Output("taken", "Thought: east.\nAction: go east", "east.", "go east", True, None, tokens)
    html = output_html(output, "logprob")
    assert '<span class="as-text">Thought:</span><span class="as-tokens">' in html


def test_numbers_are_escaped_too() -> None:
    """A record that skipped validation (numbers that are markup) is shown as text by every view."""
    from types import SimpleNamespace

    from studio.viz.html import context_html, episode_header, history_step_html, labels_html, side_html

    episode = hostile_episode()
    step = episode.steps[0]
    step.index, step.timing = ATTACK, {"policy_s": ATTACK}
    episode.seed, episode.forked_at, episode.parent_id = ATTACK, ATTACK, ATTACK
    side = SimpleNamespace(steps=[step], success=None, total_return=ATTACK, end_reason=ATTACK)
    past = SimpleNamespace(index=ATTACK, reward=ATTACK, observation=ATTACK, thought=ATTACK, action=ATTACK)
    views = [
        timeline_html(episode, 0),
        candidates_html(step),
        prompt_html(step),
        episode_header(episode),
        history_step_html(past),
        context_html(ATTACK, [past, past, past], ATTACK, ATTACK),
        side_html(ATTACK, side),
        labels_html(episode, {0: ATTACK}, 0),
    ]
    for html in views:
        assert "<img" not in html and "<script" not in html, html


def test_a_served_tokens_hover_says_what_the_top_k_cover_and_its_card_what_is_missing() -> None:
    from studio.trace import TokenAlternative
    from studio.viz.html import token_title, top_k_summary

    top = [TokenAlternative(5, "east", math.log(0.5)), TokenAlternative(6, "west", math.log(0.3))]
    mass, entropy = top_k_summary(top)
    assert math.isclose(mass, 0.8) and math.isclose(entropy, -(0.625 * math.log(0.625) + 0.375 * math.log(0.375)))
    title = token_title(TokenInfo(5, "east", math.log(0.5), None, top=top))
    assert "top-2 mass=0.800 · entropy over the top 2=0.662" in title and "entropy=" not in title.split("·")[2]
    # An in-process token keeps its full entropy and shows no top-k estimate.
    assert "top-2 mass" not in token_title(TokenInfo(5, "east", math.log(0.5), 1.25, top=top))
    card = model_card_html(
        {
            "id": "http://gpu:8000/v1",
            "engine": "vLLM",
            "served_model": "Qwen/Qwen3-32B",
            "kind": "served",
            "parameters": None,
            "capabilities": {"logprobs": True, "scoring": True, "top_alternatives": True, "attention": False},
        },
        "B",
    )
    assert "<th>engine</th><td>vLLM</td>" in card and "<th>served model</th><td>Qwen/Qwen3-32B</td>" in card
    assert "<th>not available</th><td>attention</td>" in card and "parameters" not in card
    assert "entropy is shown over the top k" in card


def test_a_served_token_is_coloured_by_the_entropy_over_its_top_k() -> None:
    from studio.trace import TokenAlternative

    even = [TokenAlternative(i, str(i), math.log(0.2)) for i in range(5)]
    sure = [TokenAlternative(0, "0", math.log(0.99)), TokenAlternative(1, "1", math.log(0.01))]
    assert token_colour(TokenInfo(0, "0", math.log(0.2), None, top=even), "entropy") != token_colour(
        TokenInfo(0, "0", math.log(0.99), None, top=sure), "entropy"
    )


def test_values_figures_have_a_bar_per_output_and_escape_actions() -> None:
    from studio.scaling.values import StepValue
    from studio.viz.plots import value_curve_figure, values_figure

    def value(output: str, action: str, q: float) -> StepValue:
        return StepValue("e1", 0, output, action, q, 0.1, True, 1.0, [q], [True], [3], "expert", 1, None)

    values = [value("taken", "go east", 0.9), value("candidate 1", ATTACK, 0.5)]
    figure = values_figure(values)
    assert list(figure.data[0].x) == [0.9, 0.5] and list(figure.data[0].error_x.array) == [0.1, 0.1]
    assert "<img" not in json.dumps(figure.to_plotly_json()) and "&lt;img" in str(figure.layout.yaxis.ticktext)
    assert values_figure([]) is None
    curve = value_curve_figure(hostile_episode(), values)
    assert list(curve.data[0].x) == [0] and list(curve.data[0].y) == [0.9]
    assert curve.layout.xaxis.dtick == 1  # whole steps, not 0.2-step ticks
    legend = curve.layout.legend
    assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")  # under the axis title, not over it
