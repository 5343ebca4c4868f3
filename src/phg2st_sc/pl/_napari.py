"""Measured, imputed and error values of genes in napari, over the H&E, with a gene picker."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from phg2st_sc._constants import Keys
from phg2st_sc._image import hires_image, library_info
from phg2st_sc._utils import _is_spatialdata, as_dense
from phg2st_sc.pl._base import as_anndata, check_genes_layers, error_limit, layer_label, section_view, value_limits

if TYPE_CHECKING:
    import napari
    from spatialdata import SpatialData

GENE_PICKER = "phg2st gene"


def _rgba(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Colours of ``values`` on ``cmap`` between ``vmin`` and ``vmax``; NaN (unmeasured) spots light grey."""
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    cm = mpl.colormaps[cmap].with_extremes(bad="lightgray")
    return cm(Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)(np.ma.masked_invalid(values)))


class _GeneColours:
    """Colours every value layer of the viewer for one gene (what the gene picker calls)."""

    def __init__(
        self,
        adata: AnnData,
        layers: list[str | None],
        points: dict[str, Any],
        errors: dict[str, Any],
        *,
        cmap: str,
        error_cmap: str,
        vmax_percentile: float,
        stds: dict[str, Any] | None = None,
    ):
        self.adata, self.layers, self.points, self.errors = adata, layers, points, errors
        self.stds = stds or {}  # prediction layer name -> points layer of its standard deviation
        self.cmap, self.error_cmap, self.vmax_percentile = cmap, error_cmap, vmax_percentile
        self.gene: str | None = None

    def _column(self, layer: str | None, col: int) -> np.ndarray:
        x = self.adata.X if layer is None else self.adata.layers[layer]
        return np.asarray(as_dense(x[:, [col]]), dtype=float).ravel()

    def __call__(self, gene: str) -> None:
        col = int(self.adata.var_names.get_loc(gene))
        values = {layer_label(layer): self._column(layer, col) for layer in self.layers}
        vmin, vmax = value_limits(list(values.values()), self.vmax_percentile)
        for name, layer in self.points.items():
            layer.features = pd.DataFrame({gene: values[name]})
            layer.face_color = _rgba(values[name], self.cmap, vmin, vmax)
            layer.metadata["phg2st"] = {"gene": gene, "contrast_limits": (vmin, vmax), "cmap": self.cmap}
        reference = values[layer_label(self.layers[0])]
        for name, layer in self.errors.items():
            err = values[name] - reference
            lim = error_limit(err)
            layer.features = pd.DataFrame({f"{gene} error": err})
            layer.face_color = _rgba(err, self.error_cmap, -lim, lim)
            layer.metadata["phg2st"] = {"gene": gene, "contrast_limits": (-lim, lim), "cmap": self.error_cmap}
        for name, layer in self.stds.items():
            std = self._column(Keys.uncertainty(name, "std"), col)
            top = float(np.nanmax(std)) if np.isfinite(std).any() else 1.0
            layer.features = pd.DataFrame({f"{gene} std": std})
            layer.face_color = _rgba(std, "magma", 0.0, top)
            layer.metadata["phg2st"] = {"gene": gene, "contrast_limits": (0.0, top), "cmap": "magma"}
        self.gene = gene


def napari(
    adata: AnnData | SpatialData,
    genes: str | Sequence[str] | None = None,
    *,
    layers: Sequence[str | None] = (None, Keys.PHG2ST),
    error: bool = True,
    uncertainty: bool = True,
    prompt_key: str | None = Keys.PROMPT,
    library_id: str | None = None,
    table_key: str | None = None,
    cmap: str = "viridis",
    error_cmap: str = "RdBu_r",
    vmax_percentile: float = 99.0,
    spatialdata_widget: bool = True,
    viewer: napari.Viewer | None = None,
    show: bool = True,
) -> napari.Viewer:
    """Open the H&E with measured, imputed and error values per gene in napari.

    Adds to the viewer, in full-resolution pixel coordinates: the H&E (``"H&E"``, the ``hires`` image scaled up,
    cropped to the spots with a margin of two spot diameters, so that the section fills the view),
    one points layer per entry of ``layers`` with the spots as circles of their true diameter (``"measured"``
    for ``None``, otherwise the layer's name), an error layer per prediction (``"<layer> − measured"``) when
    ``error``, and the prompt spots as black rings (``"prompts"``). A docked gene picker (``"phg2st gene"``)
    recolours every value layer: measured and predicted share one colour scale (minimum to the
    ``vmax_percentile`` percentile), errors a symmetric one; unmeasured spots (NaN) are light grey. Each points
    layer holds the selected gene's values in ``features`` (shown when hovering) and the colour scale in
    ``metadata["phg2st"]``.

    For a SpatialData object the napari-spatialdata element browser is docked as well (``spatialdata_widget``),
    so any other element of the store can be added from it. Works in a notebook (``show=True`` opens the
    window and returns at once) and in a script (call ``napari.run()`` to keep the window open).

    Nothing is written into ``adata``.

    Parameters
    ----------
    adata
        A section with spot coordinates (``obsm['spatial']``) and, for the background, an image in
        ``uns['spatial'][library_id]['images']['hires']``; or a SpatialData object with a table annotating spots.
    genes
        Genes offered by the picker (the first is shown); default all genes of ``adata``.
    layers
        Value layers to show: ``None`` for ``X`` (measured), else names in ``adata.layers``. Layers that are
        missing raise a :class:`KeyError`.
    error
        Add ``layer − first layer`` for every further layer.
    uncertainty
        Add ``"<layer> std"``, the predictive standard deviation (``layers[layer + '_std']`` of
        :func:`phg2st_sc.tl.impute`, own colour scale from 0), for every further layer that has one.
    prompt_key
        Boolean column of ``obs`` marking the prompt spots (drawn as rings); ignored when absent.
    library_id
        Which ``uns['spatial']`` entry holds the image (needed only when there are several).
    table_key
        Which table of a SpatialData object (needed only when there are several).
    cmap, error_cmap
        Matplotlib colour maps of the values and of the errors.
    vmax_percentile
        Upper end of the value colour scale, as a percentile of the shown values (robust to outliers).
    spatialdata_widget
        Dock napari-spatialdata's element browser when ``adata`` is a SpatialData object.
    viewer
        Add to this viewer instead of a new one. Create it after importing torch's stack (e.g. after
        ``import lightning``), or train before opening it: triton, which that stack loads, crashes the process
        when first imported after napari has an OpenGL context (seen with Mesa). With ``viewer=None`` this
        function imports triton first.
    show
        Show the window (``False`` builds the viewer hidden, e.g. for screenshots in scripts and tests).

    Returns
    -------
    The :class:`napari.Viewer`; ``viewer.window.dock_widgets["phg2st gene"]`` is the gene picker (set its
    ``value`` to switch gene from code).

    Examples
    --------
    >>> viewer = phg2st.pl.napari(adata, ["ERBB2", "KRT8"], layers=(None, "phg2st"))  # doctest: +SKIP
    """
    sdata = adata if _is_spatialdata(adata) else None
    adata = as_anndata(adata, table_key)
    genes, layers = check_genes_layers(
        adata, list(adata.var_names) if genes is None else genes, layers, vmax_percentile
    )
    view = section_view(adata, library_id, image=False, spot_scale=1.0)  # full-resolution pixels
    lib, info = library_info(adata, library_id)
    hires, scalef = hires_image(info, lib)

    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        # triton (which torch, lightning and torch-geometric load) brings its own LLVM: imported after napari has
        # an OpenGL context on Mesa it crashes the process (measured here), imported before it does not. So a
        # notebook can open the viewer first and train afterwards.
        import triton  # noqa: F401

    import napari as napari_

    if viewer is None:
        viewer = napari_.Viewer(title="phg2st", show=show)
    if sdata is not None and spatialdata_widget:
        from napari_spatialdata import Interactive

        if napari_.current_viewer() is viewer:  # Interactive docks its browser into the current viewer
            Interactive(sdata, headless=True)
        else:
            warnings.warn(
                "The given viewer is not napari's current viewer: the SpatialData browser is not docked.", stacklevel=2
            )
    yx, diameter = view.xy[:, ::-1], view.diameter
    if hires is not None:  # the part of the H&E under the spots (and a margin), so that the section fills the view
        lo = np.floor((yx.min(axis=0) - 2 * diameter) * scalef).astype(int).clip(0)
        hi = np.ceil((yx.max(axis=0) + 2 * diameter) * scalef).astype(int)
        crop = hires[lo[0] : hi[0], lo[1] : hi[1]]
        viewer.add_image(crop, name="H&E", rgb=True, scale=(1.0 / scalef, 1.0 / scalef), translate=tuple(lo / scalef))
    symbol = "square" if view.shape == "square" else "disc"
    points = {}
    for layer in layers:
        name = layer_label(layer)
        points[name] = viewer.add_points(
            yx, name=name, size=diameter, symbol=symbol, border_width=0, visible=layer == layers[-1]
        )
    errors = {}
    if error:
        for layer in layers[1:]:
            name = f"{layer_label(layer)} − {layer_label(layers[0])}"
            errors[layer_label(layer)] = viewer.add_points(
                yx, name=name, size=diameter, symbol=symbol, border_width=0, visible=False
            )
    stds = {}
    if uncertainty:
        for layer in layers[1:]:
            if layer is not None and Keys.uncertainty(layer, "std") in adata.layers:
                stds[layer] = viewer.add_points(
                    yx, name=f"{layer} std", size=diameter, symbol=symbol, border_width=0, visible=False
                )
    if prompt_key is not None and prompt_key in adata.obs:
        prompts = adata.obs[prompt_key].to_numpy().astype(bool)
        viewer.add_points(
            yx[prompts], name="prompts", size=diameter, symbol=symbol, face_color="transparent", border_color="black",
            border_width=0.08, border_width_is_relative=True,
        )  # fmt: skip
    colour = _GeneColours(
        adata, layers, points, errors, cmap=cmap, error_cmap=error_cmap, vmax_percentile=vmax_percentile, stds=stds
    )
    colour(genes[0])

    from magicgui.widgets import ComboBox

    picker = ComboBox(choices=genes, value=genes[0], label="gene")
    picker.changed.connect(lambda gene: colour(gene))  # a lambda: the signal would hold `colour` only weakly
    viewer.window.add_dock_widget(picker, name=GENE_PICKER, area="right")
    viewer.reset_view()
    return viewer
