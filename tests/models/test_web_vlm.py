"""Image-text models see the web page: the screenshot goes into the model with the observation (the same
pixels the step keeps, not the frame with the action drawn on it), and its attention lies over the
screenshot's patches. (A served model is refused images in one line: tests/models/test_remote.py.)"""

from __future__ import annotations

import numpy as np

from studio.agents.react import ReActConfig, ReActPolicy
from studio.episodes.runner import EpisodeRunner
from studio.models.base import SamplingParams
from studio.models.hf import TransformersBackend
from studio.viz.video import attention_frames, episode_frames
from tests.support.tiny_models import tiny_llava, tiny_tokenizer


def test_an_image_text_model_acts_on_the_screenshot_and_attends_to_its_patches() -> None:
    tokenizer = tiny_tokenizer()
    model, processor = tiny_llava(tokenizer)
    backend = TransformersBackend(model, tokenizer, processor)
    seen: list[np.ndarray] = []
    real_generate = backend.generate

    def watching(messages, *args, images=None, **kwargs):
        seen.extend(images or [])
        return real_generate(messages, *args, images=images, **kwargs)

    backend.generate = watching  # type: ignore[method-assign]
    config = ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=12), few_shot=False)
    runner = EpisodeRunner("web:miniwob.click-button", ReActPolicy(backend, config), {"wait": 0.05})
    runner.reset(seed=0)
    step = runner.step()
    assert step.prompt[-1]["content"][0] == {"type": "image"}
    assert seen and np.array_equal(seen[0], step.frame)  # the screenshot itself, as kept
    assert "[13] button 'no'" in step.observation  # with the page's text
    backend.generate = real_generate  # type: ignore[method-assign]
    frames = episode_frames(runner.episode)
    overlaid = attention_frames(runner.episode, frames, backend)
    assert overlaid[0].shape == frames[0].shape and not np.array_equal(overlaid[0], frames[0])
    runner.env.close()


def test_score_mode_ranks_a_click_on_each_interactive_element_and_heats_their_boxes() -> None:
    import math

    from studio.viz.screen import element_mass, mark_step
    from tests.support.tiny_models import tiny_llama

    tokenizer = tiny_tokenizer()
    backend = TransformersBackend(tiny_llama(tokenizer), tokenizer)
    config = ReActConfig(
        sampling=SamplingParams(temperature=0.0, max_new_tokens=8), few_shot=False, action_mode="score"
    )
    runner = EpisodeRunner("web:miniwob.click-button", ReActPolicy(backend, config), {"wait": 0.05})
    runner.reset(seed=0)
    interactive = sorted((bid for bid, box in runner.env.elements().items() if box[4]), key=int)
    step = runner.step()
    assert sorted(step.action_logprobs) == sorted(f"click('{bid}')" for bid in interactive)
    assert math.isclose(sum(math.exp(v) for v in step.action_logprobs.values()), 1.0, rel_tol=1e-6)
    assert step.action in step.action_logprobs and step.valid
    mass = element_mass(step)
    assert set(mass) == set(interactive) and math.isclose(sum(mass.values()), 1.0, rel_tol=1e-6)
    assert not np.array_equal(mark_step(step.frame, step), step.frame)
    runner.env.close()
