"""Attention onto the environment: grid cells from text tokens, image patches to pixels."""

from __future__ import annotations

import numpy as np
import pytest

from studio.analysis.projection import cell_mass, grid_overlay, patch_box, patch_overlay
from studio.envs import make_env


@pytest.mark.parametrize(("size", "seed"), [(5, 0), (7, 3), (9, 11), (15, 2)])
def test_each_grid_character_maps_to_its_cell(size: int, seed: int) -> None:
    env = make_env("gridworld", {"size": size})
    observation, _ = env.reset(seed=seed)
    cells = env.text_cells(observation)
    assert len(cells) == size * size
    lines = observation.split("\n")
    for index, row, column in cells:
        assert observation[index] == lines[1 + row][column]  # the grid follows the first line
    # One token per character (a character-level tokenizer), placed after a 100-character prompt.
    prefix = 100
    offsets = [(prefix + i, prefix + i + 1) for i in range(len(observation))]
    for index, row, column in cells:
        weights = np.zeros(prefix + len(observation))
        weights[prefix + index] = 1.0
        mass = cell_mass(weights, [None] * prefix + offsets, prefix, cells, (size, size))
        expected = np.zeros((size, size))
        expected[row, column] = 1.0
        np.testing.assert_array_equal(mass, expected)


def test_a_token_covering_several_cells_is_split_evenly() -> None:
    env = make_env("gridworld", {"size": 5})
    observation, _ = env.reset(seed=0)
    cells = env.text_cells(observation)
    first_row = observation.index("\n") + 1  # a tokenizer that merges the whole first grid row ("#####")
    offsets = [(0, first_row), (first_row, first_row + 5), (first_row + 5, len(observation))]
    mass = cell_mass(np.array([0.2, 0.5, 0.3]), offsets, 0, cells, (5, 5))
    np.testing.assert_allclose(mass[0], [0.1] * 5)
    assert mass[1:].sum() == pytest.approx(0.3)  # the rest of the grid shares the last token


def test_the_heaviest_cell_is_the_hottest_on_the_frame() -> None:
    env = make_env("gridworld", {"size": 7})
    env.reset(seed=1)
    frame = env.render()
    mass = np.zeros((7, 7))
    mass[2, 5] = 1.0
    overlay = grid_overlay(frame, mass, env.cell_box)
    changed = np.abs(overlay.astype(int) - frame.astype(int)).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = env.cell_box(2, 5)
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1


def test_patch_to_pixel_mapping_on_a_known_case() -> None:
    frame_shape = (160, 160, 3)
    assert patch_box(0, (4, 4), frame_shape) == (0, 0, 40, 40)
    assert patch_box(6, (4, 4), frame_shape) == (80, 40, 120, 80)  # row 1, column 2
    assert patch_box(15, (4, 4), frame_shape) == (120, 120, 160, 160)
    frame = np.full(frame_shape, 128, dtype=np.uint8)
    weights = np.zeros(16)
    weights[6] = 1.0
    overlay = patch_overlay(frame, weights, (4, 4))
    changed = np.argwhere(np.abs(overlay.astype(int) - 128).sum(axis=2) > 0)
    assert (
        changed[:, 0].min() == 40
        and changed[:, 0].max() == 79
        and changed[:, 1].min() == 80
        and changed[:, 1].max() == 119
    )
