"""A served image-text model is sent the screenshot: the request's shape, recorded by a local HTTP
server that answers as vLLM's chat endpoint does (vLLM's CPU build here cannot serve a vision model:
its PyPI torchvision does not match the CPU torch, see the closing note of issue 31). What is checked:
the frame goes as a lossless PNG image part where the prompt places it, the forced prefix is
continued, token ids and logprobs are asked for and read back exactly, scoring (which the chat endpoint
cannot do exactly) and a text-only model's image are refused in one line, and a ReAct step on a web
task sends its screenshot."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.episodes.runner import EpisodeRunner
from studio.errors import StudioError
from studio.frames import png_to_frame
from studio.models.base import SamplingParams
from studio.models.registry import ModelRegistry
from tests.support.tiny_models import tiny_llava, tiny_tokenizer

#: What the recording server streams back: (token id, logprob, top alternatives).
ANSWER = [(70, -0.25, {70: -0.25, 71: -1.5}), (71, -0.5, {71: -0.5, 70: -1.0}), (72, -1.0, {72: -1.0})]


class Recorder(BaseHTTPRequestHandler):
    """vLLM's OpenAI endpoints as far as the backend asks them; every POST body is kept."""

    served: dict = {}
    bodies: list[tuple[str, dict]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, data: dict, status: int = 200) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json({"data": [self.served]})
        elif self.path == "/version":
            self._json({"version": "recorded"})
        else:
            self._json({"error": "no"}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for choice in range(body.get("n", 1)):
            for token, logprob, top in ANSWER:
                item = {
                    "token": f"token_id:{token}",
                    "logprob": logprob,
                    "top_logprobs": [{"token": f"token_id:{t}", "logprob": v} for t, v in top.items()],
                }
                event = {"choices": [{"index": choice, "delta": {"content": "x"}, "logprobs": {"content": [item]}}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            done = {"choices": [{"index": choice, "delta": {}, "finish_reason": "length"}]}
            self.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture()
def served(tmp_path: Path):
    """A recording server 'serving' a tiny LLaVA saved here (its tokenizer and config are read locally)."""
    tokenizer = tiny_tokenizer()
    model, processor = tiny_llava(tokenizer)
    folder = tmp_path / "tiny-llava"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Recorder.served, Recorder.bodies = {"id": "tiny-llava", "root": str(folder), "max_model_len": 2048}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", folder
    finally:
        server.shutdown()


def _frames_in(body: dict) -> list[np.ndarray]:
    urls = [
        part["image_url"]["url"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]
    assert all(url.startswith("data:image/png;base64,") for url in urls)
    return [png_to_frame(base64.b64decode(url.split(",", 1)[1])) for url in urls]


def test_a_frame_goes_to_the_chat_endpoint_as_an_image_part_and_tokens_come_back_exactly(served) -> None:
    url, _folder = served
    backend = ModelRegistry().load(url)
    assert backend.capabilities.images  # its config has a vision tower
    frame = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    messages = [
        {"role": "system", "content": "Act."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Observation: a page"}]},
    ]
    result = backend.generate(
        messages,
        n=2,
        sampling=SamplingParams(temperature=0.0, max_new_tokens=3),
        images=[frame],
        assistant_prefix="Thought:",
    )
    ((path, body),) = Recorder.bodies
    assert path == "/v1/chat/completions" and body["model"] == "tiny-llava" and body["n"] == 2
    assert body["logprobs"] is True and body["top_logprobs"] == backend.top_k and body["return_tokens_as_token_ids"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Thought:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][1]["content"][1] == {"type": "text", "text": "Observation: a page"}
    (sent,) = _frames_in(body)
    assert np.array_equal(sent, frame)  # lossless, the frame itself
    for generation in result.generations:
        assert [t.id for t in generation.tokens] == [token for token, _, _ in ANSWER]
        assert [t.logprob for t in generation.tokens] == [logprob for _, logprob, _ in ANSWER]
        assert [a.id for a in generation.tokens[0].top] == [70, 71]
    # A served image-text model does not score (the chat endpoint cannot force tokens exactly): one line.
    assert not backend.capabilities.scoring and not backend.capabilities.token_level
    with pytest.raises(StudioError, match="scoring is not offered") as refused:
        backend.score(messages, [" go"], images=[frame])
    assert "\n" not in str(refused.value) and len(Recorder.bodies) == 1
    # Without images, the completions endpoint with token ids, as before.
    backend.generate([{"role": "user", "content": "hi"}], sampling=SamplingParams(max_new_tokens=3))
    assert Recorder.bodies[-1][0] == "/v1/completions" and isinstance(Recorder.bodies[-1][1]["prompt"], list)


def test_a_react_step_on_a_web_task_sends_the_screenshot(served) -> None:
    url, _folder = served
    backend = ModelRegistry().load(url)
    config = ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=3), few_shot=False)
    runner = EpisodeRunner("web:miniwob.click-button", ReActPolicy(backend, config), {"wait": 0.05})
    runner.reset(seed=0)
    step = runner.step()
    chats = [body for path, body in Recorder.bodies if path == "/v1/chat/completions"]
    assert chats and np.array_equal(_frames_in(chats[0])[-1], step.frame)
    assert "[13] button 'no'" in json.dumps(chats[0]["messages"])
    runner.env.close()


def test_a_text_only_served_model_is_refused_images_in_one_line(served) -> None:
    url, folder = served
    config = json.loads((folder / "config.json").read_text())
    del config["vision_config"]
    (folder / "config.json").write_text(json.dumps(config))
    backend = ModelRegistry().load(url)
    assert not backend.capabilities.images
    with pytest.raises(StudioError, match="takes text only") as refused:
        backend.generate([{"role": "user", "content": "hi"}], images=[np.zeros((4, 4, 3), dtype=np.uint8)])
    assert "\n" not in str(refused.value) and Recorder.bodies == []
