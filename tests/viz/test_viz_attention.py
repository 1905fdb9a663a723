"""The attention views: escaped token strip, the layer × head grid, the projection onto the frame."""

from __future__ import annotations

import numpy as np

from studio.analysis.attention import AttentionMap
from studio.envs import make_env
from studio.viz.attention import perception_html, projection_image, segment_grid_figure, token_strip_html


def synthetic_map(observation: str, prefix: str = "<b>Task</b>: reach G\nObservation: ") -> AttentionMap:
    """A character-level map whose single output row attends only to the observation's '@'."""
    output = "Action: go east"
    text = prefix + observation + output
    length = len(text)
    at = len(prefix) + observation.index("@")
    weights = np.zeros((2, 3, 1, length), dtype=np.float32)
    weights[..., 0] = 0.5  # the sink
    weights[..., at] = 0.5
    observation_span = (len(prefix), len(prefix) + len(observation))
    return AttentionMap(
        tokens=list(text),
        prompt_length=len(prefix) + len(observation),
        rows=[length - 1],
        weights=weights,
        segments={
            "task": list(range(0, 11)),
            "observation": list(range(*observation_span)),
            "output": list(range(observation_span[1], length)),
        },
        offsets=[(i, i + 1) for i in range(length)],
        text=text,
        observation_span=observation_span,
        span_rows={"action": [0], "thought": [0], "generated": [0]},
    )


def test_the_strip_escapes_tokens_and_marks_segments() -> None:
    amap = synthetic_map("#####\n#@..#\n#####")
    html = token_strip_html(amap, amap.aggregate("mean"), "action")
    assert "<b>" not in html and html.count("&lt;") == 2 and html.count("&gt;") == 2
    assert html.count('class="as-seg"') == 3  # task, observation, output
    assert "rgba(234,88,12,0.850)" in html  # the '@' is the hottest token (the sink is off the scale)


def test_the_grid_shows_the_observation_share_per_layer_and_head() -> None:
    amap = synthetic_map("#####\n#@..#\n#####")
    figure = segment_grid_figure(amap, "action")
    observation = next(trace for trace in figure.data if trace.name == "current observation")
    np.testing.assert_allclose(np.array(observation.z), 0.5)
    assert np.array(observation.z).shape == (2, 3)


def test_attention_on_the_agent_lands_on_the_agent_cell() -> None:
    env = make_env("gridworld", {"size": 5})
    observation, _ = env.reset(seed=0)
    amap = synthetic_map(observation)
    frame = env.render()
    picture = projection_image(amap, amap.aggregate("mean"), env, observation, frame)
    changed = np.argwhere(np.abs(picture.astype(int) - frame.astype(int)).sum(axis=2) > 0)
    row, column = env.get_state()["agent"]
    x0, y0, x1, y1 = env.cell_box(row, column)
    assert (
        changed[:, 0].min() >= y0
        and changed[:, 0].max() < y1
        and changed[:, 1].min() >= x0
        and changed[:, 1].max() < x1
    )
    assert projection_image(amap, amap.aggregate("mean"), make_env("wikihop"), "no map here", frame) is None
    assert "50.0% on the observation" in perception_html(amap)
