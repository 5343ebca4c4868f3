"""The PHG2ST model: forward pass, training, prompt propagation, determinism, save/load, impute, bad input."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _compare import assert_adata_equal, assert_same_weights
from _synthetic import SMALL

import phg2st_sc as phg2st
from phg2st_sc._model._data import slide_batch
from phg2st_sc._model._module import phg2st_loss

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("no_progress"),
]


def batch_for(model, adata, prompt):
    slide = model.tensors(adata)
    return slide_batch(slide, prompt, ~prompt, model.config["prompt_k"])


@pytest.mark.parametrize("variant", ["propagated", "paper"])
def test_forward_shapes_and_finite_loss(synthetic_section, variant):
    a = synthetic_section()
    model = phg2st.tl.fit(a, variant=variant, max_epochs=1, validation=None, **SMALL)
    # the default training prompts are the variant's, those of every benchmark figure
    assert model.training["prompt_fraction"] == {"propagated": [0.05, 0.3], "paper": 0.3}[variant]
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::7] = True
    b = batch_for(model, a, prompt)
    out = model.module.train()(b)
    assert out["pred"].shape == (a.n_obs, 12) and out["latent"].shape == (a.n_obs, 32)
    assert out["pred_spot"].shape == out["pred_nbr"].shape == (a.n_obs, 12)
    loss = phg2st_loss(out, b["y"], b["rows"], 0.3)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.module.parameters())


@pytest.mark.parametrize("variant", ["propagated", "paper"])
def test_overfits_one_batch(synthetic_section, variant):
    a = synthetic_section()
    model = phg2st.tl.fit(a, variant=variant, max_epochs=1, validation=None, prompt_fraction=0.3, **SMALL)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::5] = True
    b = batch_for(model, a, prompt)
    module = model.module.train()
    module.config.dropout = 0.0
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(b)["pred"][b["rows"]], b["y"][b["rows"]])
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.05 * first


def test_prompts_reach_other_spots_only_in_the_propagated_variant(synthetic_section):
    """Changing one prompt's measured values changes the predictions at unmeasured spots near it (default variant);
    in the paper's variant it changes the prediction at that prompt only (REFERENCE, section 3)."""
    a = synthetic_section()
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[[10, 40, 70]] = True
    centre = 40
    xy = a.obsm["spatial"]
    near = np.flatnonzero((np.linalg.norm(xy - xy[centre], axis=1) < 100) & ~prompt)
    for variant in ("propagated", "paper"):
        model = phg2st.tl.fit(a, variant=variant, max_epochs=2, validation=None, **SMALL)
        model.module.eval()
        changed = a.copy()
        changed.X[centre] += 3.0
        with torch.inference_mode():
            before = model.module(batch_for(model, a, prompt))["pred"].numpy()
            after = model.module(batch_for(model, changed, prompt))["pred"].numpy()
        delta = np.abs(after - before).max(axis=1)
        if variant == "propagated":
            assert (delta[near] > 1e-3).all()
        else:
            assert delta[centre] > 0
            np.testing.assert_array_equal(delta[np.arange(a.n_obs) != centre], 0.0)


def test_determinism_and_save_load(synthetic_section, tmp_path):
    a = synthetic_section()
    b = synthetic_section(seed=1, name="S1")
    m1 = phg2st.tl.fit([a, b], max_epochs=3, seed=7, **SMALL)
    m2 = phg2st.tl.fit([a, b], max_epochs=3, seed=7, **SMALL)
    assert_same_weights(m1, m2)
    assert list(m1.history_.columns[:2]) == ["epoch", "train_loss"] and "val_pcc" in m1.history_
    phg2st.tl.select_prompts(a, fraction=0.2, seed=0)
    phg2st.tl.impute(a, m1)
    path = tmp_path / "model.pt"
    m1.save(path)
    loaded = phg2st.PHG2ST.load(path)
    assert loaded.genes == m1.genes and loaded.info["use_rep"] == "X_tiny" and loaded.config == m1.config
    again = phg2st.tl.impute(a, loaded, copy=True)
    np.testing.assert_array_equal(again.layers["phg2st"], a.layers["phg2st"])
    with pytest.raises(FileExistsError):
        m1.save(path)
    # a truncated file and a file that is not a model fail clearly
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable"):
        phg2st.PHG2ST.load(broken)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a phg2st-sc model"):
        phg2st.PHG2ST.load(tmp_path / "other.pt")
    evil = tmp_path / "evil.pt"
    torch.save({"format": "phg2st-sc model", "payload": np.random.default_rng}, evil)
    with pytest.raises(ValueError, match="not a readable"):
        phg2st.PHG2ST.load(evil)


def test_impute_contract(synthetic_section):
    a = synthetic_section()
    model = phg2st.tl.fit(a, max_epochs=2, **SMALL)
    c = synthetic_section(seed=3, name="S3")  # a section the model never saw
    phg2st.tl.select_prompts(c, fraction=0.1, seed=1)
    out = phg2st.tl.impute(c, model, copy=True)
    assert "phg2st" not in c.layers
    pred, prompt = out.layers["phg2st"], out.obs["phg2st_prompt"].to_numpy()
    assert pred.shape == c.shape and np.isfinite(pred).all()
    np.testing.assert_allclose(pred[prompt], c.X[prompt], rtol=1e-6)
    assert out.obsm["X_phg2st"].shape == (c.n_obs, 32)
    assert out.uns["phg2st"]["params"]["n_prompts"] == prompt.sum()
    own = phg2st.tl.impute(c, model, keep_prompts=False, copy=True)
    assert not np.allclose(own.layers["phg2st"][prompt], c.X[prompt])
    # genes in another order are matched by name
    shuffled = c[:, c.var_names[::-1]].copy()
    phg2st.tl.impute(shuffled, model)
    np.testing.assert_allclose(shuffled.layers["phg2st"][:, ::-1], pred, rtol=1e-5, atol=1e-6)


def test_bad_input(synthetic_section):
    a = synthetic_section()
    model = phg2st.tl.fit(a, max_epochs=1, **SMALL)
    assert model.config["variant"] == "adaptive" and model.training["prompt_fraction"] == [0.05, 0.3]  # defaults
    c = synthetic_section(seed=4, name="S4")
    with pytest.raises(KeyError, match="select_prompts"):
        phg2st.tl.impute(c, model)
    phg2st.tl.select_prompts(c, fraction=0.1)
    snapshot = c.copy()
    bad_cases = []
    no_graph = c.copy()
    del no_graph.obsp["phg2st_incidence"]
    bad_cases.append((no_graph, KeyError, "build_hypergraph"))
    no_emb = c.copy()
    del no_emb.obsm["X_tiny"]
    bad_cases.append((no_emb, KeyError, "X_tiny"))
    other_genes = c.copy()
    other_genes.var_names = [f"H{i}" for i in range(c.n_vars)]
    bad_cases.append((other_genes, ValueError, "other genes"))
    import anndata as ad

    extra = ad.concat([c, c[:, :2].copy()], axis=1, merge="first", uns_merge="first")
    extra.var_names_make_unique()
    bad_cases.append((extra, ValueError, "select_genes"))
    no_prompts = c.copy()
    no_prompts.obs["phg2st_prompt"] = False
    bad_cases.append((no_prompts, ValueError, "no spot"))
    all_prompts = c.copy()
    all_prompts.obs["phg2st_prompt"] = True
    bad_cases.append((all_prompts, ValueError, "every spot"))
    for data, exc, msg in bad_cases:
        before = data.copy()
        with pytest.raises(exc, match=msg):
            phg2st.tl.impute(data, model)
        assert_adata_equal(data, before)
    with pytest.raises(TypeError, match="PHG2ST"):
        phg2st.tl.impute(c, "model")
    with pytest.raises(ValueError, match="length"):
        model.predict(c, np.ones(3, dtype=bool))
    assert_adata_equal(c, snapshot)
    for kwargs, exc in [
        (dict(variant="nope"), ValueError),
        (dict(prompt_fraction=0.0), ValueError),
        (dict(prompt_fraction=(0.3, 0.1)), ValueError),
        (dict(max_epochs=0), ValueError),
        (dict(validation=1.5), ValueError),
        (dict(use_image=False, use_prompts=False), ValueError),
        (dict(use_rep="X_nope"), KeyError),
    ]:
        with pytest.raises(exc):
            phg2st.tl.fit(a, **{**SMALL, "max_epochs": 1, **kwargs})


def test_ddp_two_cpu_processes(tmp_path):
    """Data-parallel training with Lightning's DDP strategy on 2 CPU processes (a script, as DDP launches it)."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, pathlib
            sys.path.insert(0, {str(pathlib.Path(__file__).parent.parent)!r})
            import numpy as np
            import phg2st_sc as phg2st
            from _synthetic import make_section as _synthetic_section
            phg2st.settings.progress = False
            tmp = pathlib.Path({str(tmp_path)!r})
            slides = [_synthetic_section(tmp, seed=s, name=f"S{{s}}") for s in range(4)]
            model = phg2st.tl.fit(slides, max_epochs=2, strategy="ddp", devices=2, use_rep="X_tiny",
                                  config=dict(hidden=32, heads=2, spot_depth=1, neighbour_depth=1), accelerator="cpu")
            import torch.distributed as dist
            rank = dist.get_rank() if dist.is_initialized() else 0
            if rank == 0:
                model.save(tmp / "ddp.pt")
                print("WORLD", model.info["world_size"])
            """
        )
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "WORLD 2" in res.stdout
    model = phg2st.PHG2ST.load(tmp_path / "ddp.pt")
    assert model.info["epochs_trained"] >= 1


@pytest.mark.data
def test_fit_on_real_sections_and_impute_an_unseen_one(c2_imputed_by_colour_model):
    """Train briefly on C3 and C4 (colour features, prompt-only baseline comparison), impute C2."""
    c2, model = c2_imputed_by_colour_model
    assert model.info["normalization"]["protocol"] == "heldout"
    s = phg2st.tl.score(c2, layer="phg2st").summary
    assert s["n_spots"] == 168 and np.isfinite(s["pcc"]) and np.isfinite(s["mae"])


@pytest.mark.parametrize(
    "switch",
    [{"use_spot_branch": False}, {"use_neighbour_branch": False}, {"use_prompts": False}, {"use_image": False}],
)
@pytest.mark.parametrize("variant", ["propagated", "paper"])
def test_ablations_train_and_use_every_parameter(synthetic_section, variant, switch):
    a = synthetic_section()
    if variant == "paper" and switch.get("use_image") is False:
        with pytest.raises(ValueError, match="only through the image"):
            phg2st.tl.fit(a, variant=variant, max_epochs=1, **SMALL, **switch)
        return
    model = phg2st.tl.fit(a, variant=variant, max_epochs=1, validation=None, **SMALL, **switch)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::6] = True
    b = batch_for(model, a, prompt)
    module = model.module.train()
    loss = phg2st_loss(module(b), b["y"], b["rows"], 0.3)
    loss.backward()
    unused = [n for n, p in module.named_parameters() if p.grad is None]
    assert not unused, unused


def test_impute_documents_its_slots(synthetic_section):
    import inspect
    import re

    a = synthetic_section()
    model = phg2st.tl.fit(a, max_epochs=1, variant="adaptive", **SMALL)  # the variant that writes every slot
    phg2st.tl.select_prompts(a, fraction=0.2)
    before = a.copy()
    out = phg2st.tl.impute(a, model, copy=True)
    doc = inspect.getdoc(phg2st.tl.impute).split("Returns", 1)[1]
    documented = {
        (s, k.format(layer_added="phg2st")) for s, k in re.findall(r"``\.(obs|obsm|layers|uns)\['([^']+)'\]", doc)
    }
    slots = ("obs", "obsm", "layers", "uns")
    written = {(s, k) for s in slots for k in set(getattr(out, s).keys()) - set(getattr(before, s).keys())}
    assert documented == written
    # without uncertainty (another variant, or switched off) the uncertainty slots are the ones not written
    plain = phg2st.tl.impute(a, model, copy=True, uncertainty=False)
    fewer = {(s, k) for s in slots for k in set(getattr(plain, s).keys()) - set(getattr(before, s).keys())}
    assert documented - fewer == {("layers", "phg2st_std"), ("layers", "phg2st_lo"), ("layers", "phg2st_hi"),
                                  ("obs", "phg2st_std_mean")}  # fmt: skip


def test_auto_validation_holds_out_the_last_section(synthetic_section):
    slides = [synthetic_section(seed=s, name=f"S{s}") for s in range(3)]
    model = phg2st.tl.fit(slides, max_epochs=1, **SMALL)
    assert model.info["training_sections"] == ["S0", "S1"] and model.info["validation"] == "1 held-out sections"
    two = phg2st.tl.fit(slides[:2], max_epochs=1, **SMALL)
    assert two.info["training_sections"] == ["S0", "S1"] and "10%" in two.info["validation"]
    with pytest.raises(ValueError, match="validation"):
        phg2st.tl.fit(slides, max_epochs=1, validation="everything", **SMALL)


def test_chunked_inference_and_windowed_attention_match(synthetic_section):
    """Chunked fusion gives the same predictions; windowed attention equals full attention when one window holds all."""
    from phg2st_sc._model._module import window_order, windowed

    a = synthetic_section(side=12)
    model = phg2st.tl.fit(a, max_epochs=1, **SMALL)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::9] = True
    b = batch_for(model, a, prompt)
    module = model.module.eval()
    with torch.inference_mode():
        full = module(b)["pred"]
        chunked = module(b, chunk=17)["pred"]
        torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
        blk = module.spot_blocks[0]
        t = torch.randn(a.n_obs, 32)
        order = window_order(b["pos"], 1000, 0)
        torch.testing.assert_close(windowed(blk, t, order, 1000), blk(t.unsqueeze(0)).squeeze(0), rtol=1e-5, atol=1e-5)
        # small windows: every spot is processed exactly once and windows are spatially compact
        order = window_order(b["pos"], 16, 0)
        assert sorted(order.tolist()) == list(range(a.n_obs))
        groups = b["pos"][order][: (a.n_obs // 16) * 16].view(-1, 16, 2)
        extent = (groups.max(1).values - groups.min(1).values).max()
        assert extent < 12  # a window spans a patch, not a whole row of the 12 x 12 grid
    model.module.config.attention_window = 16
    with torch.inference_mode():
        windowed_pred = model.module(b)["pred"]
    assert torch.isfinite(windowed_pred).all() and not torch.allclose(windowed_pred, full)


def test_training_step_chunks_only_when_memory_is_short(monkeypatch, synthetic_section):
    """A step that would overfill memory runs in checkpointed chunks: the same loss and gradients."""
    import torch

    from phg2st_sc._model import _plan
    from phg2st_sc._model._data import TrainSlides

    a = synthetic_section(side=12)
    model = phg2st.tl.fit(a, max_epochs=1, validation=None, dropout=0.0, **SMALL)  # no dropout: same masks
    batch = TrainSlides([model.tensors(a)], 0.2, 16, 0)[0]
    monkeypatch.setattr(_plan, "TRAIN_CHUNK", 50)
    monkeypatch.setattr(_plan, "available_memory", lambda: 10**12)
    assert _plan.training_chunk(batch, 32, torch.device("cpu")) is None
    monkeypatch.setattr(_plan, "available_memory", lambda: 10**3)
    assert _plan.training_chunk(batch, 32, torch.device("cpu")) == 50

    m = model.module
    m.train()
    grads = []
    for chunk in (None, 50):
        m.zero_grad()
        torch.manual_seed(0)
        out = m(batch, chunk=chunk)
        loss = _plan.phg2st_loss(out, batch["y"], batch["rows"], m.config.lam)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for g0, g1 in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)


def test_architecture_as_config_matches_the_deprecated_keywords(synthetic_section):
    """`config` (a ModelConfig or a dict) builds the same model as the old flat keywords, which warn."""
    a = synthetic_section()
    run = dict(max_epochs=1, validation=None, use_rep="X_tiny", accelerator="cpu", seed=3)
    arch = dict(hidden=32, heads=2, spot_depth=1, neighbour_depth=1, dropout=0.0)
    from_dict = phg2st.tl.fit(a, config=arch, **run)
    from_config = phg2st.tl.fit(a, config=phg2st.tl.ModelConfig(**arch), **run)
    with pytest.warns(DeprecationWarning, match=r"config=\{"):
        flat = phg2st.tl.fit(a, **arch, **run)
    assert from_dict.config == from_config.config == flat.config and from_dict.config["hidden"] == 32
    assert_same_weights(from_dict, flat)
    assert_same_weights(from_dict, from_config)
    with pytest.raises(ValueError, match="contradicts"):
        phg2st.tl.fit(a, variant="paper", config={"variant": "propagated"}, **run)
    with pytest.raises(TypeError, match=r"Unknown architecture settings \['hiden'\]"):
        phg2st.tl.fit(a, config={"hiden": 32}, **run)
    with pytest.raises(TypeError, match="must be a ModelConfig or a dict"):
        phg2st.tl.fit(a, config=[("hidden", 32)], **run)
    with pytest.raises(ValueError, match="multiple of `heads`"):
        phg2st.tl.fit(a, config={"hidden": 30, "heads": 4}, **run)


def test_input_description_and_training_record_are_kept_apart(synthetic_section, tmp_path):
    """`input` is what a section must hold, `training` how the model was made; a file of the one-dict layout loads."""
    import json

    a = synthetic_section()
    model = phg2st.tl.fit(a, max_epochs=1, validation=None, seed=5, **SMALL)
    assert model.input.use_rep == "X_tiny" and model.input.genes == model.genes
    assert model.input.spot_pitch == pytest.approx(phg2st._utils.spot_pitch(a.obsm["spatial"]))
    assert model.input.normalization["library_size"] > 0
    assert model.training["seed"] == 5 and model.training["epochs_trained"] == 1
    assert "seed" not in model.input.record() and "use_rep" not in model.training
    view = model.info
    view["use_rep"] = "elsewhere"  # a view: the model is unchanged
    assert model.input.use_rep == "X_tiny" and model.info["seed"] == 5
    path = tmp_path / "m.pt"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    # the layout before `training` had its own field: one `info` dict holding both
    payload["info"] = json.dumps({**json.loads(payload["info"]), **json.loads(payload.pop("training"))})
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    for loaded in (phg2st.PHG2ST.load(path), phg2st.PHG2ST.load(old)):
        assert loaded.input == model.input and loaded.training == model.training


def test_several_networks_average_their_predictions(synthetic_section, tmp_path):
    """``n_networks=2``: the networks ``fit`` gives with seeds 3 and 4, their predictions averaged (and, under the
    in-context layer, their cross-fitted predictions at the prompts, each aligned on its own network; the layer's
    ridge reads both networks' tokens), the first network's latent tokens returned; kept through save and load."""
    from phg2st_sc._model._incontext import adapt, spot_rank

    a, b = synthetic_section(), synthetic_section(seed=1, name="S1")
    both = phg2st.tl.fit([a, b], max_epochs=2, seed=3, n_networks=2, **SMALL)
    first = phg2st.tl.fit([a, b], max_epochs=2, seed=3, **SMALL)
    second = phg2st.tl.fit([a, b], max_epochs=2, seed=4, **SMALL)
    assert len(both.members) == 1 and [r["seed"] for r in both.training["networks"]] == [3, 4]
    assert_same_weights(both, first)
    assert_same_weights(type("M", (), {"module": both.members[0]}), second)
    assert "networks=2" in repr(both)
    prompt = np.zeros(a.n_obs, dtype=bool)
    prompt[::5] = True
    nets = [m.predict(a, prompt, network_only=True) for m in (first, second)]
    pred, latent = both.predict(a, prompt, network_only=True)
    np.testing.assert_allclose(pred, (nets[0][0] + nets[1][0]) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(latent, nets[0][1])
    slide = first.tensors(a, prompt=prompt)
    rank = spot_rank(a.obs_names)  # the folds `predict` deals over the spots' names
    with torch.inference_mode():
        at = [m._cross_fitted(slide, prompt, "cpu", n, rank) for m, n in zip((first, second), nets, strict=True)]
    expected, _ = adapt(pred, np.hstack([nets[0][1], nets[1][1]]), slide.x.numpy(), slide.pos.numpy(), prompt,
                        slide.y.numpy().astype(np.float64)[prompt], network_at_prompts=(at[0][0] + at[1][0]) / 2,
                        latent_at_prompts=np.hstack([at[0][1], at[1][1]]), spot_rank=rank)  # fmt: skip
    adapted = both.predict(a, prompt)[0]
    np.testing.assert_allclose(adapted, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(pred - nets[0][0]).max() > 1e-3  # the second network matters
    path = tmp_path / "two.pt"
    both.save(path)
    first.save(tmp_path / "one.pt")  # a file of one network is as before: version 1, no `members`
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    assert one["format_version"] == 1 and "members" not in one
    assert torch.load(path, weights_only=True)["format_version"] == 2
    loaded = phg2st.PHG2ST.load(path)
    assert len(loaded.members) == 1 and loaded.training["networks"] == both.training["networks"]
    np.testing.assert_array_equal(loaded.predict(a, prompt)[0], adapted)
    phg2st.tl.select_prompts(a, mask=prompt)
    out = phg2st.tl.impute(a, loaded, copy=True)
    assert out.uns["phg2st"]["params"]["n_networks"] == 2
    np.testing.assert_array_equal(out.layers["phg2st"][~prompt], adapted[~prompt])
    # a second network's weights are checked like the first's
    payload = torch.load(path, weights_only=True)
    key = next(k for k, v in payload["members"][0].items() if v.is_floating_point())
    payload["members"][0][key] = payload["members"][0][key] * float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(phg2st.ModelFileError, match="NaN.*members\\[0\\]|members\\[0\\].*NaN"):
        phg2st.PHG2ST.load(tmp_path / "nan.pt")
    payload["members"] = "weights"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(phg2st.ModelFileError, match="members"):
        phg2st.PHG2ST.load(tmp_path / "bad.pt")
    one["members"] = [one["state_dict"]]  # several networks under the version of one
    torch.save(one, tmp_path / "mixed.pt")
    with pytest.raises(phg2st.ModelFileError, match="format version 1 has no `members`"):
        phg2st.PHG2ST.load(tmp_path / "mixed.pt")
    # a member of another architecture is refused before predicting or saving
    other = phg2st.tl.fit([a, b], max_epochs=1, seed=3, config=dict(SMALL["config"], hidden=16),
                          **{k: v for k, v in SMALL.items() if k != "config"})  # fmt: skip
    first.members = [other.module]
    with pytest.raises(ValueError, match="members\\[0\\]"):
        first.predict(a, prompt)
    with pytest.raises(ValueError, match="members\\[0\\]"):
        first.save(tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()


@pytest.mark.parametrize("value", [0, 1.5, True, "2"])
def test_bad_network_counts_are_refused_before_training(synthetic_section, value):
    a = synthetic_section()
    with pytest.raises((ValueError, TypeError), match="n_networks"):
        phg2st.tl.fit([a], max_epochs=1, n_networks=value, **SMALL)


def test_several_networks_do_not_take_checkpoints(synthetic_section, tmp_path):
    with pytest.raises(ValueError, match="n_networks=1"):
        phg2st.tl.fit([synthetic_section()], max_epochs=1, n_networks=2, checkpoint_dir=tmp_path / "ck", **SMALL)
    assert not (tmp_path / "ck").exists()
    # the last network's seed is checked before the first is trained; callbacks and loggers hold one run's state
    with pytest.raises(ValueError, match="seed \\+ n_networks - 1"):
        phg2st.tl.fit([synthetic_section()], max_epochs=1, n_networks=2, seed=2**32 - 1, **SMALL)
    from lightning.pytorch.callbacks import EarlyStopping

    with pytest.raises(ValueError, match="one training run's state"):
        phg2st.tl.fit([synthetic_section()], max_epochs=1, n_networks=2, callbacks=[EarlyStopping("val_pcc")], **SMALL)


def test_defaults_train_the_benchmarked_network(synthetic_section, monkeypatch):
    """`tl.fit`'s defaults are the network every benchmark figure measures: 128-d tokens, at most 100 epochs for the
    adaptive and propagated variants (the paper variant: the paper's 200); an explicit value wins."""
    from phg2st_sc._model._model import PHG2ST

    a = synthetic_section()
    asked = []
    train = PHG2ST.train

    def one_epoch(self, *args, **kwargs):  # record the limit fit asked for, train one epoch
        asked.append(kwargs["max_epochs"])
        return train(self, *args, **{**kwargs, "max_epochs": 1})

    monkeypatch.setattr(PHG2ST, "train", one_epoch)
    for variant, epochs in (("adaptive", 100), ("propagated", 100), ("paper", 200)):
        model = phg2st.tl.fit(a, variant=variant, use_rep="X_tiny", validation=None, accelerator="cpu")
        assert asked[-1] == epochs and model.training["max_epochs"] == epochs
        assert model.config["hidden"] == 128
    model = phg2st.tl.fit(a, use_rep="X_tiny", validation=None, accelerator="cpu", max_epochs=7, config={"hidden": 64})
    assert asked[-1] == 7 and model.training["max_epochs"] == 7 and model.config["hidden"] == 64
    with pytest.raises(ValueError, match="max_epochs"):
        phg2st.tl.fit(a, use_rep="X_tiny", validation=None, accelerator="cpu", max_epochs=0)
