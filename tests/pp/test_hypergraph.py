"""The spot hypergraph against brute force, its properties on real C2, the tile sub-hypergraphs."""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import phg2st_sc as phg2st
from phg2st_sc.pp._hypergraph import neighbour_hyperedges, spot_hyperedges


def brute_force(f, p, k, sf, sp):
    comb = cdist(f, f) / sf + cdist(p, p) / sp
    np.fill_diagonal(comb, np.inf)
    return np.argsort(comb, axis=1, kind="stable")[:, :k], np.sort(comb, axis=1)[:, :k]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_against_dense_search(seed):
    rng = np.random.default_rng(seed)
    n = 400
    p = rng.uniform(0, 20, (n, 2))
    # features that vary in space plus a few far-away look-alikes, which force extra search rounds
    f = np.column_stack([np.sin(p[:, 0] / 3), np.cos(p[:, 1] / 4), rng.normal(scale=0.3, size=(n, 6))])
    f[:10] = f[300:310] + 1e-3
    members, dist, info = spot_hyperedges(f, p, 4, seed=seed)
    ref, ref_d = brute_force(f.astype(np.float32), p, 4, info["feature_scale"], info["position_scale"])
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-5)
    assert (np.sort(members, 1) == np.sort(ref, 1)).mean() > 0.999  # ties aside
    assert info["search_rounds"] >= 1


def test_scales_are_the_mean_kth_neighbour_distances():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 10, (300, 2))
    f = rng.normal(size=(300, 5))
    _, _, info = spot_hyperedges(f, p, 4)
    dp = np.sort(cdist(p, p), axis=1)[:, 4].mean()
    df = np.sort(cdist(f, f), axis=1)[:, 4].mean()
    assert info["position_scale"] == pytest.approx(dp)
    assert info["feature_scale"] == pytest.approx(df, rel=1e-4)  # n <= 512: every spot is in the sample
    # units do not matter: pixels or microns give the same hyperedges
    m1, _, _ = spot_hyperedges(f, p, 4)
    m2, _, _ = spot_hyperedges(f * 7.0, p * 0.69, 4)
    np.testing.assert_array_equal(m1, m2)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_permuting_spots_permutes_the_hypergraph(seed):
    rng = np.random.default_rng(seed)
    n = 60
    a = AnnData(np.zeros((n, 1)))
    a.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
    a.obsm["X_f"] = rng.normal(size=(n, 4))
    order = rng.permutation(n)
    b = a[order].copy()
    phg2st.pp.build_hypergraph(a, use_rep="X_f", k=3)
    phg2st.pp.build_hypergraph(b, use_rep="X_f", k=3)
    ha = a.obsp["phg2st_incidence"].toarray()
    hb = b.obsp["phg2st_incidence"].toarray()
    np.testing.assert_allclose(hb, ha[np.ix_(order, order)], rtol=1e-5, atol=1e-6)


@pytest.mark.data
def test_real_c2_hypergraph(c2_embedded):
    a = c2_embedded
    phg2st.pp.build_hypergraph(a, use_rep="X_efficientnet_lite0")
    h = a.obsp["phg2st_incidence"].tocsc()
    assert h.shape == (187, 187)
    assert (np.diff(h.indptr) == 5).all()  # each column: the spot and its k = 4 neighbours
    np.testing.assert_array_equal(h.diagonal(), 1.0)
    assert np.isfinite(h.data).all() and (h.data > 0).all() and (h.data <= 1).all()
    d = a.obsp["phg2st_distances"].tocsc()
    assert (np.diff(d.indptr) == 4).all() and (d.diagonal() == 0).all() and (d.data > 0).all()
    # hyperedges are spatially local (a few array pitches) because position is half the metric
    coo = d.tocoo()
    pitch = a.uns["spatial"]["C2"]["metadata"]["spot_pitch_px"]
    assert np.median(np.linalg.norm(a.obsm["spatial"][coo.row] - a.obsm["spatial"][coo.col], axis=1)) < 2 * pitch
    nh = a.obsm["phg2st_neighbour_hyperedges"]
    assert nh.shape == (187, 25, 4) and nh.dtype == np.int8 and (nh >= 0).all()
    assert (nh != np.arange(25)[None, :, None]).all()  # no tile is its own neighbour
    # spot 0's sub-hypergraph equals a brute-force search over its 25 tiles
    emb, _ = phg2st.pp.neighbour_embeddings(a, "X_efficientnet_lite0")
    dd = cdist(emb[0], emb[0])
    np.fill_diagonal(dd, np.inf)
    np.testing.assert_array_equal(nh[0], np.argsort(dd, axis=1, kind="stable")[:, :4])
    assert a.uns["phg2st_hypergraph"]["params"]["k"] == 4


def test_masked_tiles_are_respected():
    tiles = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    index = np.array([[0, 1, 2, -1], [3, -1, -1, -1], [4, 5, 6, 7]])
    out = neighbour_hyperedges(tiles, index, 2)
    assert (out[0, 3] == -1).all() and set(out[0, :3].ravel()) <= {0, 1, 2}
    assert (out[1] == -1).all()  # a lone tile has no neighbours
    assert (out[2] >= 0).all()


def test_bad_input():
    rng = np.random.default_rng(0)
    a = AnnData(np.zeros((6, 1)))
    a.obsm["spatial"] = rng.uniform(size=(6, 2))
    snapshot = a.copy()
    with pytest.raises(KeyError, match="X_uni"):
        phg2st.pp.build_hypergraph(a)
    a.obsm["X_f"] = rng.normal(size=(6, 3))
    with pytest.raises(ValueError, match="needs more than 6"):
        phg2st.pp.build_hypergraph(a, use_rep="X_f", k=6)
    a.obsm["X_f"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        phg2st.pp.build_hypergraph(a, use_rep="X_f")
    with pytest.raises(ValueError, match="k"):
        phg2st.pp.build_hypergraph(a, use_rep="X_f", k=0)
    a.obsm["X_f"][0, 0] = 0.0
    a.obsm["X_f_neighbours"] = np.zeros((6, 9), dtype=np.int32)
    with pytest.raises(KeyError, match="tile_embeddings"):
        phg2st.pp.build_hypergraph(a, use_rep="X_f", k=2)
    assert not a.obsp and set(a.uns) == set(snapshot.uns)


# --- structure, self-inclusion, determinism, permutations (hypothesis) --------------------------------------------


def random_section(n: int, seed: int, *, duplicates: bool = False, d: int = 4) -> AnnData:
    """``n`` spots with features; with ``duplicates``, spots sit on a small integer lattice (many equal distances)
    where a fifth of them repeat another spot's position, and some share features too. (More than half of the
    spots stacked is a degenerate layout, refused: see the bad-input catalogue.)"""
    rng = np.random.default_rng(seed)
    a = AnnData(np.zeros((n, 1)))
    if duplicates:
        side = int(np.ceil(np.sqrt(2 * n))) + 1
        unique = n - n // 5
        cells = rng.choice(side * side, size=unique, replace=False)
        cells = np.concatenate([cells, rng.choice(cells, size=n - unique)])  # the repeats
        a.obsm["spatial"] = np.column_stack([cells % side, cells // side]).astype(float)[rng.permutation(n)]
        a.obsm["X_f"] = rng.integers(0, 3, (n, d)).astype(float)
    else:
        a.obsm["spatial"] = rng.uniform(0, 100, (n, 2))
        a.obsm["X_f"] = rng.normal(size=(n, d))
    return a


@settings(max_examples=25, deadline=None)
@given(data=st.data(), k=st.integers(1, 6), seed=st.integers(0, 10_000), duplicates=st.booleans())
def test_every_hyperedge_is_its_spot_and_its_k_nearest(data, k, seed, duplicates):
    """As documented: column j of the incidence holds j (weight 1) and exactly k other spots, the k nearest under
    I; the distances hold the same k positions and never the diagonal."""
    n = data.draw(st.integers(k + 1, 90), label="n")
    a = random_section(n, seed, duplicates=duplicates)
    phg2st.pp.build_hypergraph(a, use_rep="X_f", k=k)
    params = a.uns["phg2st_hypergraph"]["params"]
    h = a.obsp["phg2st_incidence"].tocsc()
    d = a.obsp["phg2st_distances"].tocsc()
    assert h.shape == d.shape == (n, n)
    assert (np.diff(h.indptr) == k + 1).all() and (np.diff(d.indptr) == k).all()
    np.testing.assert_array_equal(h.diagonal(), 1.0)
    ref, ref_d = brute_force(
        a.obsm["X_f"].astype(np.float32), a.obsm["spatial"], k, params["feature_scale"], params["position_scale"]
    )
    tau = params["tau"]  # the mean I over all neighbour pairs
    assert tau == pytest.approx(d.data.mean() or 1.0)
    for j in range(n):
        rows = d.indices[d.indptr[j] : d.indptr[j + 1]]
        dist = d.data[d.indptr[j] : d.indptr[j + 1]]
        assert j not in rows and len(set(rows)) == k  # no self-loop among the neighbours, no repeats
        np.testing.assert_allclose(np.sort(dist), ref_d[j], rtol=1e-6, atol=1e-12)  # not float32 dot products
        col = dict(zip(h.indices[h.indptr[j] : h.indptr[j + 1]], h.data[h.indptr[j] : h.indptr[j + 1]], strict=True))
        assert set(col) == {j, *rows} and col[j] == 1.0  # the spot itself, then its k neighbours weighted
        np.testing.assert_allclose([col[i] for i in rows], np.exp(-((dist / tau) ** 2)), rtol=1e-12)
    assert (h.data > 0).all() and (h.data <= 1).all()
    if not duplicates:  # without ties the neighbours are exactly the brute-force ones
        np.testing.assert_array_equal(np.sort(d.tocsc().indices.reshape(n, k), axis=1), np.sort(ref, axis=1))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.sampled_from([40, 700]), duplicates=st.booleans())
def test_building_twice_gives_identical_results(seed, n, duplicates):
    a = random_section(n, seed, duplicates=duplicates)
    b = a.copy()
    phg2st.pp.build_hypergraph(a, use_rep="X_f", k=4, seed=3)
    phg2st.pp.build_hypergraph(b, use_rep="X_f", k=4, seed=3)
    for key in ("phg2st_incidence", "phg2st_distances"):
        x, y = a.obsp[key].tocsr(), b.obsp[key].tocsr()
        for part in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(x, part), getattr(y, part), err_msg=f"{key}.{part}")
    assert a.uns["phg2st_hypergraph"] == b.uns["phg2st_hypergraph"]


@pytest.mark.parametrize("duplicates", [False, True])
def test_permuting_more_spots_than_the_scale_sample_permutes_the_hypergraph(duplicates):
    """Above 512 spots the feature scale comes from a sample of spots; it must not depend on the spots' order."""
    from phg2st_sc.pp._hypergraph import SCALE_SAMPLE

    n = SCALE_SAMPLE + 188
    a = random_section(n, 5, duplicates=duplicates)
    if duplicates:  # repeated positions, distinct features (ties between spots would make the order matter)
        a.obsm["X_f"] = np.random.default_rng(6).normal(size=(n, 4))
    order = np.random.default_rng(7).permutation(n)
    b = a[order].copy()
    phg2st.pp.build_hypergraph(a, use_rep="X_f", k=4)
    phg2st.pp.build_hypergraph(b, use_rep="X_f", k=4)
    pa, pb = a.uns["phg2st_hypergraph"]["params"], b.uns["phg2st_hypergraph"]["params"]
    assert pb["feature_scale"] == pytest.approx(pa["feature_scale"], rel=1e-6)
    for key in ("phg2st_incidence", "phg2st_distances"):
        ha = a.obsp[key].toarray()[np.ix_(order, order)]  # P A P^T
        hb = b.obsp[key].toarray()
        np.testing.assert_array_equal(hb != 0, ha != 0, err_msg=key)
        np.testing.assert_allclose(hb, ha, rtol=1e-5, atol=1e-6, err_msg=key)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), k=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_tile_hyperedges_hold_the_nearest_other_valid_tiles(data, k, seed):
    """Documented: per tile, the window positions of its k nearest *other* valid tiles, nearest first; -1 for masked
    tiles and where the window has fewer than k other valid tiles."""
    rng = np.random.default_rng(seed)
    n, g = data.draw(st.integers(1, 6), label="spots"), data.draw(st.sampled_from([4, 9, 25]), label="grid")
    tiles = rng.normal(size=(40, 3)).astype(np.float32)
    index = rng.integers(0, 40, (n, g))
    index[rng.uniform(size=(n, g)) < data.draw(st.floats(0, 0.8), label="masked")] = -1
    out = neighbour_hyperedges(tiles, index, k)
    assert out.shape == (n, g, k) and out.dtype == np.int8
    for s in range(n):
        valid = np.flatnonzero(index[s] >= 0)
        emb = tiles[np.maximum(index[s], 0)]
        for t in range(g):
            got = out[s, t]
            if index[s, t] < 0:
                assert (got == -1).all()
                continue
            others = valid[valid != t]
            m = min(k, len(others))
            assert (got[m:] == -1).all() and len(set(got[:m])) == m
            assert set(got[:m]) <= set(others) and t not in got  # no self-loop
            dist = np.linalg.norm(emb[others] - emb[t], axis=1)
            chosen = np.linalg.norm(emb[got[:m]] - emb[t], axis=1)
            assert (np.diff(chosen) >= -1e-5).all()  # nearest first
            if m:
                assert chosen.max() <= np.sort(dist)[m - 1] + 1e-5  # and they are the m nearest


def test_windows_shared_by_spots_are_searched_once_with_the_same_result():
    """Spots of one lattice cell share their window (binned slides: dozens per cell); the distinct windows are
    searched once and the result is what a search per spot gives."""
    from phg2st_sc.pp._hypergraph import _window_neighbours

    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(60, 8)).astype(np.float32)
    distinct = rng.integers(-1, 60, (7, 25))
    index = distinct[rng.integers(0, 7, 300)]  # 300 spots, 7 windows
    np.testing.assert_array_equal(neighbour_hyperedges(tiles, index, 4), _window_neighbours(tiles, index, 4))
