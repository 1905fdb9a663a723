"""Episodes recorded by other harnesses, made for real in the tests: an Inspect AI log (its mockllm model,
offline), chat transcripts, an AgentLab experiment folder and a LeRobot dataset (LeRobot's own writer)."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LEROBOT_PYTHON = ROOT / ".venv-lerobot" / "bin" / "python"

INSPECT_SCRIPT = '''
import sys
from inspect_ai import Task, eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ModelOutput, ModelUsage, get_model
from inspect_ai.scorer import match
from inspect_ai.solver import generate, use_tools
from inspect_ai.tool import tool

@tool
def add():
    async def execute(x: int, y: int):
        """Add two numbers.

        Args:
          x: the first
          y: the second
        """
        return str(x + y)
    return execute

def used(output):
    output.usage = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)  # else tiktoken downloads
    return output

outputs = []
for a, b, final in [(1, 2, "3"), (2, 2, "5")]:
    outputs.append(used(ModelOutput.for_tool_call("mockllm/model", "add", {"x": a, "y": b})))
    outputs.append(used(ModelOutput.from_content("mockllm/model", final)))
task = Task(
    dataset=[Sample(input="What is 1+2?", target="3"), Sample(input="What is 2+2?", target="4")],
    solver=[use_tools(add()), generate()],
    scorer=match(),
)
logs = inspect_eval(task, model=get_model("mockllm/model", custom_outputs=outputs), log_dir=sys.argv[1],
                    log_format=sys.argv[2], display="none", max_samples=1)
print(logs[0].location)
'''


def inspect_log(folder: Path, log_format: str = "eval") -> Path:
    """A real Inspect eval log of two samples, each a tool call then an answer (the second answer wrong)."""
    done = subprocess.run(
        [sys.executable, "-c", INSPECT_SCRIPT, str(folder), log_format],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return Path(done.stdout.strip().splitlines()[-1].removeprefix("file://"))


def chat_records() -> list[dict[str, Any]]:
    """Two conversations in OpenAI's format, one with tool calls."""
    return [
        {
            "id": "conv-1",
            "model": "gpt-test",
            "success": True,
            "messages": [
                {"role": "system", "content": "You are a careful agent."},
                {"role": "user", "content": "Find the capital of France."},
                {
                    "role": "assistant",
                    "content": "I should look it up.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "search", "arguments": '{"q": "capital of France"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "name": "search", "content": "Paris is the capital of France."},
                {"role": "assistant", "content": "The capital of France is Paris."},
            ],
        },
        {
            "id": "conv-2",
            "score": 0,
            "messages": [
                {"role": "user", "content": "Say hello."},
                {"role": "assistant", "content": [{"type": "text", "text": "Goodbye."}]},
            ],
        },
    ]


def chat_jsonl(folder: Path) -> Path:
    path = folder / "transcripts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chat_records()), encoding="utf-8")
    return path


# -- AgentLab ----------------------------------------------------------------------------------------
@dataclass
class StepInfo:
    """AgentLab's step record, as agentlab.experiments.loop pickles it (the studio never imports it)."""

    step: int = 0
    obs: dict = field(default_factory=dict)
    reward: float = 0.0
    raw_reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    action: str | None = None
    agent_info: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _agentlab_module() -> None:
    """Pickle finds StepInfo under AgentLab's module name (as AgentLab's own pickles name it)."""
    name = "agentlab.experiments.loop"
    if name not in sys.modules:
        for part in ("agentlab", "agentlab.experiments", name):
            sys.modules.setdefault(part, types.ModuleType(part))
        sys.modules[name].StepInfo = StepInfo
    StepInfo.__module__ = name


def agentlab_folder(folder: Path, extra: Any = None) -> Path:
    """An AgentLab experiment folder of 3 step files (2 actions; the second fails with an error),
    screenshots in the observations; ``extra`` is put in the first step's agent_info."""
    _agentlab_module()
    exp = folder / "2026-12-05_GenericAgent_on_miniwob.click-button_0"
    exp.mkdir(parents=True)
    actions = ["click('13')", "fill('7', 'hello')", None]
    for number, action in enumerate(actions):
        shot = np.zeros((20, 30, 3), np.uint8)
        shot[:, : 10 * (number + 1)] = 255
        info = StepInfo(
            step=number,
            obs={
                "goal": "Click the OK button.",
                "axtree_txt": f"[13] button 'OK' (page {number})",
                "screenshot": shot,
                "last_action_error": "element 7 is not a field" if number == 2 else "",
                "url": "file:///miniwob/click-button.html",
            },
            reward=1.0 if number == 2 else 0.0,
            terminated=number == 2,
            action=action,
            agent_info={"think": f"thinking {number}", "extra": extra}
            if number == 0
            else {"think": f"thinking {number}"},
        )
        with gzip.open(exp / f"step_{number}.pkl.gz", "wb") as handle:
            pickle.dump(info, handle)
    (exp / "summary_info.json").write_text(json.dumps({"cum_reward": 1.0, "n_steps": 2}), encoding="utf-8")
    return exp


def lerobot_dataset(folder: Path) -> Path:
    """A LeRobot v3 dataset written by LeRobot's own writer (tests/support/lerobot_writer.py)."""
    if not LEROBOT_PYTHON.exists():
        raise RuntimeError(
            "LeRobot's writer is not installed: run `bash scripts/setup.sh --test` (it makes .venv-lerobot)."
        )
    root = folder / "toy"
    done = subprocess.run(
        [str(LEROBOT_PYTHON), str(ROOT / "tests" / "support" / "lerobot_writer.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return root
