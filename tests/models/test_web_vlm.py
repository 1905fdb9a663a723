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
