"""Figures of docs/benchmarks.md, "the GP baseline's constant genes", that the rows alone do not give.

1. How many of the 785 genes are constant over 10% random prompts (seed 0) on C2 and C4, both targets.
2. The draw that moved most (C6, 3x3 smoothed, space design at 5%, prompt seed 1): the kernel fitted with the
   constant genes in the likelihood (as before the fix) and without them (the fix), each one's log marginal
   likelihood over the varying genes, and each one's held-out PCC.

    PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_gp_constant/flat_likelihood.py
"""

import warnings

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

import phg2st_sc as phg2st
from phg2st_sc._model._incontext import _pcc_genes
from phg2st_sc._utils import as_dense, spot_pitch, standardised, varying
from phg2st_sc.tl._baselines import predict_gp
from phg2st_sc.tl._evaluation import draw_prompts

warnings.simplefilter("ignore")


def section(name, protocol, fraction, seed, strategy):
    work = phg2st.tl.prepare_targets(phg2st.datasets.her2st(name), protocol, panel="her2st_785")
    draw_prompts(work, fraction, seed, strategy)
    return work, work.obs["phg2st_prompt"].to_numpy(bool), as_dense(work.X), work.obsm["spatial"]


for name in ("C2", "C4"):
    for protocol in ("heldout", "heldout_smoothed"):
        _, m, y, _ = section(name, protocol, 0.1, 0, "random")
        print(
            f"{name} {protocol}: {m.sum()} prompts, {(~varying(y[m])).sum()} of {y.shape[1]} genes constant over them"
        )

_, m, y, xy = section("C6", "heldout_smoothed", 0.05, 1, "space")
unit, live = spot_pitch(xy), varying(y[m])
held = ~m
ok = y[held].std(0) > 0


def kernel_of(params):
    return ConstantKernel(params["amplitude"]) * RBF(params["length_scale"] / unit) + WhiteKernel(params["noise"])


# before the fix: every gene standardised (a constant one as zeros) in the summed likelihood
old = GaussianProcessRegressor(ConstantKernel(1.0, (1e-2, 1e2)) * RBF(3.0, (0.1, 100.0)) + WhiteKernel(0.5, (1e-5, 1e1)),
                               n_restarts_optimizer=2, random_state=1).fit(xy[m] / unit, standardised(y[m]))  # fmt: skip
fitted = old.kernel_.get_params()
before = {"amplitude": fitted["k1__k1__constant_value"], "length_scale": fitted["k1__k2__length_scale"] * unit,
          "noise": fitted["k2__noise_level"]}  # fmt: skip
mu, sd = y[m].mean(0), np.where(live, y[m].std(0), 1.0)
pred_before = old.predict(xy[held] / unit) * sd + mu
pred_after, after = predict_gp(xy[m], y[m], xy[held], unit=unit, seed=1)
z = standardised(y[m][:, live])
print(f"C6 3x3 smoothed, space design 5%, seed 1: {m.sum()} prompts, {(~live).sum()} gene(s) constant over them")
for label, params, pred in (("before", before, pred_before), ("after", after, pred_after)):
    gp = GaussianProcessRegressor(kernel_of(params), optimizer=None).fit(xy[m] / unit, z)
    pcc = _pcc_genes(pred[:, ok], y[held][:, ok]).mean()
    print(f"  {label}: length scale {params['length_scale'] / unit:.2f} pitches, amplitude {params['amplitude']:.3f}, "
          f"noise {params['noise']:.4f}; log marginal likelihood over the varying genes "
          f"{gp.log_marginal_likelihood_value_:.2f}; held-out PCC {pcc:.4f}")  # fmt: skip
