"""Tile geometry and region reading (no encoder)."""

from __future__ import annotations

import numpy as np
import pytest

from phg2st_sc.pp._tiles import RegionReader, plan_tiles


def test_plan_geometry_and_reuse():
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(20), np.arange(20))
    coords = np.column_stack([xs.ravel(), ys.ravel()]) * 290.0 + 1500 + rng.uniform(-5, 5, (400, 2))
    plan = plan_tiles(coords, (9000, 9000), 224, 5)
    assert plan.spot_boxes.shape == (400, 2) and plan.index.shape == (400, 25)
    # spot tiles are centred on the spots
    np.testing.assert_allclose(plan.spot_boxes + 112, coords, atol=0.5)
    # each window is centred within half a tile of its spot, rows of the grid are row-major
    centre = plan.cell_boxes[plan.index[:, 12]] + 112
    assert (np.abs(centre - coords) <= 112).all()
    left, up = plan.cell_boxes[plan.index[:, 11]], plan.cell_boxes[plan.index[:, 7]]
    np.testing.assert_array_equal(left + [224, 0], plan.cell_boxes[plan.index[:, 12]])
    np.testing.assert_array_equal(up + [0, 224], plan.cell_boxes[plan.index[:, 12]])
    # every cell is used and distinct; far fewer passes than naive
    assert len(np.unique(plan.cells, axis=0)) == len(plan.cells)
    assert set(np.unique(plan.index)) == set(range(len(plan.cells)))
    assert plan.n_naive / plan.n_passes > 5


def test_cells_off_the_image_are_masked():
    coords = np.array([[10.0, 10.0], [500.0, 400.0], [990.0, 790.0]])
    plan = plan_tiles(coords, (800, 1000), 100, 5)
    centres = (plan.cells + 0.5) * 100
    assert ((centres >= 0) & (centres < [1000, 800])).all()
    assert (plan.index[0].reshape(5, 5)[:2] == -1).all() and (plan.index[0].reshape(5, 5)[:, :2] == -1).all()
    assert (plan.index[1] >= 0).all()
    assert (plan.index[2].reshape(5, 5)[3:] == -1).all()


def test_plan_errors():
    with pytest.raises(ValueError, match="odd"):
        plan_tiles(np.zeros((1, 2)), (10, 10), 4, 4)
    with pytest.raises(ValueError, match="at least 1 pixel"):
        plan_tiles(np.zeros((1, 2)), (10, 10), 0, 5)


def test_region_reader_pads_white():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    r = RegionReader(img)
    np.testing.assert_array_equal(r.read(2, 3, 5), img[3:8, 2:7])
    out = r.read(-2, -3, 6)
    np.testing.assert_array_equal(out[3:, 2:], img[:3, :4])
    assert (out[:3] == 255).all() and (out[:, :2] == 255).all()
    assert (r.read(100, 100, 4) == 255).all()
    lazy = RegionReader(lambda: np.moveaxis(img, -1, 0), (20, 30), channels_first=True)
    np.testing.assert_array_equal(lazy.read(25, 15, 10)[:5, :5], img[15:20, 25:30])
