"""tl.design_prompts: where to measure, from the layout and the image alone."""

from __future__ import annotations

import numpy as np
import pytest

import phg2st_sc as phg2st
from phg2st_sc._constants import Keys


@pytest.fixture
def c2_design(c2, colour_features):
    c2.obsm["X_colour"] = colour_features(c2)
    return c2


def _nearest_chosen(xy, chosen):
    from scipy.spatial import cKDTree

    return cKDTree(xy[chosen]).query(xy[~chosen], k=1)[0]


@pytest.mark.parametrize("strategy", ["space", "variance"])
def test_spatial_designs_cover_the_tissue_better_than_random_spots(c2_design, strategy):
    """her2st C2, 10% of the spots: the largest distance from a spot to a chosen one is far below random's."""
    phg2st.tl.design_prompts(c2_design, budget=0.1, strategy=strategy)
    chosen = c2_design.obs["phg2st_design"].to_numpy(bool)
    xy = c2_design.obsm["spatial"]
    assert chosen.sum() == round(0.1 * c2_design.n_obs)
    worst_random = np.median(
        [_nearest_chosen(xy, phg2st.tl.select_prompts(c2_design, fraction=0.1, seed=s, copy=True).obs[Keys.PROMPT]
                         .to_numpy(bool)).max() for s in range(10)]
    )  # fmt: skip
    assert _nearest_chosen(xy, chosen).max() < 0.75 * worst_random
    order = c2_design.obs["phg2st_design_order"].to_numpy()
    assert sorted(order[chosen]) == list(range(chosen.sum())) and (order[~chosen] == -1).all()


def test_feature_design_covers_the_histology(c2_design):
    """k-centres in feature space: the farthest spot from any chosen one, in features, is closer than random's."""
    phg2st.tl.design_prompts(c2_design, budget=19, strategy="features", use_rep="X_colour")
    chosen = c2_design.obs["phg2st_design"].to_numpy(bool)
    x = c2_design.obsm["X_colour"]
    z = (x - x.mean(0)) / x.std(0)
    random = [phg2st.tl.select_prompts(c2_design, n_prompts=19, seed=s, copy=True).obs[Keys.PROMPT].to_numpy(bool)
              for s in range(10)]  # fmt: skip
    assert _nearest_chosen(z, chosen).max() < min(_nearest_chosen(z, r).max() for r in random)


def test_designs_are_reproducible_and_extend_existing_prompts(c2_design):
    first = phg2st.tl.design_prompts(c2_design, budget=10, strategy="space", seed=3, copy=True)
    again = phg2st.tl.design_prompts(c2_design, budget=10, strategy="space", seed=3, copy=True)
    other = phg2st.tl.design_prompts(c2_design, budget=10, strategy="space", seed=4, copy=True)
    np.testing.assert_array_equal(first.obs["phg2st_design_order"], again.obs["phg2st_design_order"])
    assert not np.array_equal(first.obs["phg2st_design"], other.obs["phg2st_design"])
    phg2st.tl.select_prompts(c2_design, fraction=0.1, seed=0)
    more = phg2st.tl.design_prompts(c2_design, budget=5, strategy="variance", existing=Keys.PROMPT, copy=True)
    added = more.obs["phg2st_design"].to_numpy(bool)
    assert added.sum() == 5 and not (added & c2_design.obs[Keys.PROMPT].to_numpy(bool)).any()
    assert more.uns["phg2st_design"]["params"]["n_existing"] == c2_design.obs[Keys.PROMPT].sum()


def test_blocks_are_contiguous_and_placed_apart(c2_design):
    phg2st.tl.design_prompts(c2_design, budget=0.1, shape="blocks", block_size=6, strategy="space", seed=0)
    order = c2_design.obs["phg2st_design_order"].to_numpy()
    xy = c2_design.obsm["spatial"] / phg2st._utils.spot_pitch(c2_design.obsm["spatial"])
    blocks = [xy[order == r] for r in range(order.max() + 1)]
    assert [len(b) for b in blocks] == [6, 6, 6, 1]  # 19 spots: three blocks of 6 and the rest
    for b in blocks[:3]:  # contiguous: every spot of a block within 1.5 pitches of another of it
        d = np.linalg.norm(b[:, None] - b[None], axis=-1) + np.eye(len(b)) * 1e9
        assert d.min(1).max() < 1.5
    centres = np.array([b.mean(0) for b in blocks[:3]])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(centres)) * 1e9
    assert gaps.min() > 3.0


def test_virtual_spots_may_be_chosen_and_are_counted(c2_design):
    virtual = np.zeros(c2_design.n_obs, dtype=bool)
    virtual[:40] = True
    c2_design.obs[Keys.VIRTUAL] = virtual
    phg2st.tl.design_prompts(c2_design, budget=0.3, strategy="space")
    chosen = c2_design.obs["phg2st_design"].to_numpy(bool)
    assert c2_design.uns["phg2st_design"]["params"]["n_virtual_chosen"] == int((chosen & virtual).sum())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget": 0}, ValueError, "at least one"),
        ({"budget": 1.5}, ValueError, "fraction must be in"),
        ({"budget": True}, TypeError, "count or a fraction"),
        ({"budget": 10_000}, ValueError, "only"),
        ({"budget": 5, "strategy": "features"}, ValueError, "needs `use_rep`"),
        ({"budget": 5, "strategy": "features", "use_rep": "X_missing"}, KeyError, "X_missing"),
        ({"budget": 5, "strategy": "nearest"}, ValueError, "strategy"),
        ({"budget": 5, "shape": "rings"}, ValueError, "shape"),
        ({"budget": 5, "existing": "no_such_column"}, KeyError, "no_such_column"),
        ({"budget": 5, "existing": np.ones(3, bool)}, TypeError, "boolean mask"),
        ({"budget": 5, "strategy": "variance", "length_scale": -1.0}, ValueError, "length_scale"),
        ({"budget": 5, "shape": "blocks", "block_size": 0}, ValueError, "block_size"),
    ],
)
def test_bad_designs_are_refused_and_write_nothing(c2_design, kwargs, error, match):
    before = (set(c2_design.obs), set(c2_design.uns))
    with pytest.raises(error, match=match):
        phg2st.tl.design_prompts(c2_design, **kwargs)
    assert (set(c2_design.obs), set(c2_design.uns)) == before


@pytest.mark.parametrize("strategy", ["space", "features_blocks", "variance"])
def test_benchmark_prompts_can_be_designed(c2_design, strategy):
    """The evaluation core places the same number of prompts as random ones, by the design asked for."""
    from phg2st_sc.tl._evaluation import draw_prompts

    draw_prompts(c2_design, 0.1, 0, strategy, use_rep="X_colour")
    designed = c2_design.obs[Keys.PROMPT].to_numpy(bool)
    draw_prompts(c2_design, 0.1, 0, "random")
    assert designed.sum() == c2_design.obs[Keys.PROMPT].sum() == 19
    name, _, blocks = strategy.partition("_")
    expected = phg2st.tl.design_prompts(c2_design, budget=19, strategy=name, shape="blocks" if blocks else "spots",
                                        block_size=4, use_rep="X_colour", copy=True)  # fmt: skip
    np.testing.assert_array_equal(designed, expected.obs["phg2st_design"].to_numpy(bool))


def test_pl_prompts_shows_a_design_with_its_order(c2_design):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phg2st.tl.design_prompts(c2_design, budget=12, strategy="space")
    fig = phg2st.pl.prompts(c2_design, prompt_key="phg2st_design", order_key="phg2st_design_order", max_labels=10,
                            return_fig=True, show=False)  # fmt: skip
    labels = sorted(int(t.get_text()) for t in fig.axes[0].texts)
    assert labels == list(range(10))
    plt.close("all")
    for key, error in (("missing", KeyError), ("phg2st_design", TypeError)):
        with pytest.raises(error, match="order_key|integer ranks"):
            phg2st.pl.prompts(c2_design, prompt_key="phg2st_design", order_key=key, show=False)
    assert not plt.get_fignums()  # refused before a figure was made
