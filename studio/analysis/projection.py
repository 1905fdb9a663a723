"""Attention projected onto the environment: grid cells of a text map, patches of an image.

Pure functions: a weight per token position and the token's character offsets in, a mass per
cell (or patch) out, then a heatmap blended over the frame with OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Box = tuple[int, int, int, int]


def cell_mass(
    weights: np.ndarray,
    offsets: list[tuple[int, int] | None],
    observation_start: int,
    cells: list[tuple[int, int, int]],
    shape: tuple[int, int],
) -> np.ndarray:
    """Attention per map cell: each token's weight split evenly over the cells its characters draw.

    ``cells`` are (character index in the observation, row, column) as the environment's
    ``text_cells`` gives them; ``observation_start`` is where the observation begins in the
    text the offsets refer to.
    """
    at = {observation_start + index: (row, column) for index, row, column in cells}
    mass = np.zeros(shape, dtype=np.float64)
    for position, span in enumerate(offsets):
        if span is None or position >= len(weights):
            continue
        drawn = [at[c] for c in range(span[0], span[1]) if c in at]
        for row, column in drawn:
            mass[row, column] += weights[position] / len(drawn)
    return mass


def patch_box(index: int, grid: tuple[int, int], frame_shape: tuple[int, ...]) -> Box:
    """Pixel box (x0, y0, x1, y1) of patch ``index`` (row-major) on a frame the model saw whole.

    Exact for square frames (the vision tower's resize keeps all of them); other frames are
    mapped as if stretched to the model's square input.
    """
    rows, columns = grid
    height, width = frame_shape[:2]
    row, column = divmod(index, columns)
    return (
        round(column * width / columns),
        round(row * height / rows),
        round((column + 1) * width / columns),
        round((row + 1) * height / rows),
    )


def blend(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``heat`` (H, W) in [0, 1] as a colour map over ``frame`` (RGB uint8): the hotter, the more colour."""
    import cv2

    scaled = np.clip(heat, 0.0, 1.0)
    colours = cv2.cvtColor(cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    weight = (alpha * scaled)[..., None]
    return (frame.astype(np.float32) * (1 - weight) + colours.astype(np.float32) * weight).astype(np.uint8)


def grid_overlay(frame: np.ndarray, mass: np.ndarray, cell_box: Callable[[int, int], Box]) -> np.ndarray:
    """Cell masses (rows, columns) as a heatmap over the frame; the heaviest cell is the hottest."""
    heat = np.zeros(frame.shape[:2], dtype=np.float32)
    peak = mass.max()
    if peak > 0:
        for (row, column), value in np.ndenumerate(mass):
            x0, y0, x1, y1 = cell_box(row, column)
            heat[y0:y1, x0:x1] = value / peak
    return blend(frame, heat)


def patch_overlay(frame: np.ndarray, patch_weights: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Attention over image patches (row-major, rows × columns of them) as a heatmap over the frame."""
    heat = np.zeros(frame.shape[:2], dtype=np.float32)
    peak = patch_weights.max() if patch_weights.size else 0.0
    if peak > 0:
        for index, value in enumerate(patch_weights[: grid[0] * grid[1]]):
            x0, y0, x1, y1 = patch_box(index, grid, frame.shape)
            heat[y0:y1, x0:x1] = value / peak
    return blend(frame, heat)
