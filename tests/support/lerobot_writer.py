"""Writes a small LeRobot v3 dataset with LeRobot's own writer (``LeRobotDataset.create``, ``add_frame``,
``save_episode``, ``finalize``). Run by .venv-lerobot's Python (scripts/setup.sh --test), not the studio's:

    .venv-lerobot/bin/python tests/support/lerobot_writer.py ROOT

Episode ``e`` has ``5 + e`` frames; at frame ``t`` the state is ``[t, e, 0.5]``, the action ``[0.1 t, -e]``
and the camera image is grey left of column ``8 t`` (its green channel ``40 e``).
"""

import importlib.machinery
import sys
import types

import numpy as np

# The PyPI torchvision does not match the CPU torch; the writer never uses its transforms.
for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.v2"):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = module
sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
sys.modules["torchvision.transforms"].v2 = sys.modules["torchvision.transforms.v2"]

from ledataset.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
    "action": {"dtype": "float32", "shape": (2,), "names": ["dx", "dy"]},
    "observation.images.cam": {"dtype": "video", "shape": (32, 48, 3), "names": ["height", "width", "channels"]},
}


def main(root: str, episodes: int = 2) -> None:
    dataset = LeRobotDataset.create("local/toy", fps=10, features=FEATURES, root=root, use_videos=True)
    for e in range(episodes):
        for t in range(5 + e):
            image = np.zeros((32, 48, 3), np.uint8)
            image[:, : 8 * t] = 200
            image[..., 1] = 40 * e
            dataset.add_frame(
                {
                    "observation.state": np.array([t, e, 0.5], np.float32),
                    "action": np.array([t * 0.1, -e], np.float32),
                    "observation.images.cam": image,
                    "task": f"push block {e}",
                }
            )
        dataset.save_episode()
    dataset.finalize()


if __name__ == "__main__":
    main(sys.argv[1])
