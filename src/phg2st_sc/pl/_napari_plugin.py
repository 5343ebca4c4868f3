"""The napari plugin (npe2 manifest ``napari.yaml``): two widgets in napari's Plugins menu.

- *Explore* (:class:`ExploreWidget`): on a section open in napari (a table of napari-spatialdata's layers) or read
  from an .h5ad file (or a .zarr store typed as the path), show measured, imputed, error and uncertainty values per gene with the prompt spots
  marked (:func:`phg2st_sc.pl.napari` into the current viewer).
- *Impute* (:class:`ImputeWidget`): run ``tl.impute`` with a saved model on that section, in a separate process
  (``phg2st impute``) watched by a worker thread, so the viewer never freezes and the model stack (torch, triton)
  never loads into napari's process (triton imported after napari has an OpenGL context crashes it on Mesa); the
  result is then shown as by *Explore*.

The widgets are magicgui containers; napari imports this module when a widget is opened, never
``import phg2st_sc``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton

from phg2st_sc._constants import Keys

if TYPE_CHECKING:
    import napari
    from anndata import AnnData

FROM_FILE = "file below"


def _open_tables(viewer: napari.Viewer) -> dict[str, Any]:
    """The tables napari-spatialdata attached to the viewer's layers (``layer.metadata['adata']``), by layer."""
    out = {}
    for layer in viewer.layers:
        table = layer.metadata.get("adata") if isinstance(layer.metadata, dict) else None
        if table is not None and Keys.SPATIAL in getattr(table, "obsm", {}):
            out[f"layer: {layer.name}"] = table
    return out


def _read(path: str | Path) -> AnnData:
    """One section from an .h5ad file or a SpatialData .zarr store (its table, in the scanpy convention)."""
    from phg2st_sc.cli._common import read_sections

    sections = read_sections(path)
    if len(sections) != 1:
        raise ValueError(f"{path} holds {len(sections)} sections; open one.")
    return sections[0]


class _Source:
    """The section a widget works on: a table open in the viewer (napari-spatialdata) or an .h5ad file."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self.choice = ComboBox(name="section", label="section", choices=self._choices)
        self.path = FileEdit(name="path", label="file", mode="r", filter="*.h5ad")
        viewer.layers.events.inserted.connect(lambda _: self.choice.reset_choices())
        viewer.layers.events.removed.connect(lambda _: self.choice.reset_choices())

    def _choices(self, _: Any = None) -> list[str]:
        return [FROM_FILE, *_open_tables(self.viewer)]

    def table(self) -> AnnData:
        if self.choice.value == FROM_FILE:
            path = Path(str(self.path.value))
            if not path.name or not path.exists():
                raise FileNotFoundError(f"no file at {path}: choose an .h5ad file, or a section open in the viewer.")
            return _read(path)
        return _open_tables(self.viewer)[self.choice.value]


def _show(viewer: napari.Viewer, adata: AnnData, layer: str) -> None:
    """Measured, ``layer`` (with its error and uncertainty) and the prompts of ``adata`` in ``viewer``."""
    from phg2st_sc.pl._napari import napari as show_in_napari

    layers = (None, layer) if layer in adata.layers else (None,)
    show_in_napari(adata, layers=layers, viewer=viewer, show=False, spatialdata_widget=False)


class ExploreWidget(Container):
    """*Explore*: show a section's measured, imputed, error and uncertainty values per gene, prompts marked."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        self.source = _Source(napari_viewer)
        self.viewer = napari_viewer
        self.layer = LineEdit(name="layer", label="prediction layer", value=Keys.PHG2ST)
        self.status = Label(name="status", value="")
        button = PushButton(name="show", text="Show")
        super().__init__(widgets=[self.source.choice, self.source.path, self.layer, button, self.status])
        button.changed.connect(self.run)

    @property
    def path(self) -> FileEdit:
        return self.source.path

    def run(self) -> None:
        """Read the chosen section and add its layers to the viewer (also the Show button)."""
        layer = self.layer.value
        try:
            adata = self.source.table()
            _show(self.viewer, adata, layer)
        except (OSError, ValueError, KeyError) as err:
            self.status.value = f"error: {err}"
            return
        shown = "measured" + (f" and {layer}" if layer in adata.layers else f" (no layer {layer})")
        self.status.value = f"{adata.n_obs} spots, {adata.n_vars} genes: {shown}"


def _impute_command(inp: Path, model: Path, out_dir: Path, prompt_key: str, fraction: float, layer: str) -> list:
    command = [sys.executable, "-m", "phg2st_sc.cli", "impute", str(inp), "--model", str(model), "--out-dir",
               str(out_dir), "--layer-added", layer, "--no-progress"]  # fmt: skip
    return command + (["--prompt-key", prompt_key] if prompt_key else ["--prompt-fraction", str(fraction)])


def _impute_in_a_process(adata: AnnData, model: Path, prompt_key: str, fraction: float, layer: str) -> AnnData:
    """``phg2st impute`` on ``adata`` in a separate process; the result read back."""
    import anndata as ad

    with tempfile.TemporaryDirectory(prefix="phg2st-napari-") as tmp:
        inp = Path(tmp) / "section.h5ad"
        adata.write_h5ad(inp)
        res = subprocess.run(_impute_command(inp, model, Path(tmp) / "out", prompt_key, fraction, layer),
                             capture_output=True, text=True, check=False)  # fmt: skip
        if res.returncode != 0:
            lines = res.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"phg2st impute failed (exit {res.returncode})")
        return ad.read_h5ad(Path(tmp) / "out" / "section.h5ad")


class ImputeWidget(Container):
    """*Impute*: impute the section with a saved model in a worker (a separate process), then show the result.

    The prompts are the section's ``prompt column`` when it has one, else a random draw of ``else draw``.
    ``result`` holds the imputed AnnData once done; ``worker`` the running worker.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        self.source = _Source(napari_viewer)
        self.viewer = napari_viewer
        self.model = FileEdit(name="model", label="model", mode="r", filter="*.pt")
        self.prompt_key = LineEdit(name="prompt_key", label="prompt column", value=Keys.PROMPT)
        self.fraction = FloatSpinBox(name="fraction", label="else draw", value=0.1, min=0.01, max=0.9, step=0.01)
        self.layer = LineEdit(name="layer", label="layer added", value=Keys.PHG2ST)
        self.button = PushButton(name="impute", text="Impute")
        self.status = Label(name="status", value="")
        super().__init__(widgets=[self.source.choice, self.source.path, self.model, self.prompt_key, self.fraction,
                                  self.layer, self.button, self.status])  # fmt: skip
        self.button.changed.connect(self.run)
        self.result: AnnData | None = None
        self.worker = None

    @property
    def path(self) -> FileEdit:
        return self.source.path

    def run(self) -> None:
        """Start the imputation (also the Impute button); the viewer stays responsive."""
        from napari.qt.threading import create_worker

        try:
            adata = self.source.table()
            model = Path(str(self.model.value))
            if not model.is_file():
                raise FileNotFoundError(f"no model file at {model}")
        except (OSError, ValueError, KeyError) as err:
            self.status.value = f"error: {err}"
            return
        key = self.prompt_key.value if self.prompt_key.value in adata.obs else ""
        self.status.value = "imputing (in a separate process)..."
        self.button.enabled = False
        self.worker = create_worker(_impute_in_a_process, adata, model, key, self.fraction.value, self.layer.value,
                                    _progress={"desc": "phg2st impute"})  # fmt: skip
        self.worker.returned.connect(self._done)
        self.worker.errored.connect(self._failed)
        self.worker.start()

    def _done(self, result: AnnData) -> None:
        _show(self.viewer, result, self.layer.value)
        self.result = result
        self.status.value = f"imputed {result.n_obs} spots x {result.n_vars} genes into layer {self.layer.value!r}"
        self.button.enabled = True

    def _failed(self, err: Exception) -> None:
        self.status.value = f"error: {err}"
        self.button.enabled = True
