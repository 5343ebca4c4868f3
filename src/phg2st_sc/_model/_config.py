"""What a model is (its architecture, :class:`ModelConfig`) and what it needs of a section (:class:`InputSpec`).

No torch here: ``phg2st.tl.ModelConfig`` is importable without it, and the CLI checks settings with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from anndata import AnnData

VARIANTS = ("propagated", "paper", "adaptive")
#: The on/off settings of :class:`ModelConfig` (each must be a bool).
SWITCHES = ("use_spot_branch", "use_neighbour_branch", "use_prompts", "use_image", "kriged_field", "section_norm")
#: Each variant's training prompts (``tl.fit``'s default ``prompt_fraction``): a fraction drawn per step from
#: (0.05, 0.3) for the networks that propagate the prompts, which covers the 10% used at test time; the paper's 0.3.
TRAINING_PROMPTS: dict[str, float | tuple[float, float]] = {"adaptive": (0.05, 0.3), "propagated": (0.05, 0.3),
                                                            "paper": 0.3}  # fmt: skip
#: Each variant's longest training (``tl.fit``'s default ``max_epochs``): 100 epochs for the networks that propagate
#: the prompts, the setting of every accuracy figure of the adaptive variant (docs/design.md, sixteenth round; the
#: first propagated tables trained up to 200); the paper's 200.
MAX_EPOCHS: dict[str, int] = {"adaptive": 100, "propagated": 100, "paper": 200}


@dataclass
class ModelConfig:
    """Architecture of the PHG2ST network (saved with the model); give it to :func:`phg2st_sc.tl.fit` as ``config``.

    Attributes
    ----------
    n_genes, feature_dim
        Set from the data by ``tl.fit`` (genes predicted, width of the image features); 0 until then.
    variant
        ``"adaptive"`` (the default): the propagated network, its prediction then adapted to each section through
        the section's prompts (regression kriging of its cross-fitted residuals, an in-section ridge, a combination
        chosen on the prompts); ``"propagated"``: every spot attends to its nearest prompts inside the network,
        nothing adapted when imputing; ``"paper"``: as published.
    hidden, heads
        Token size and attention heads (``hidden`` a multiple of ``heads`` and of 4). 128, the size of every
        accuracy figure: 256 scored 0.0006 PCC higher on average over her2st, MOB and a new patient, below the
        rule's +0.002 for twice the cost (docs/design.md, sixteenth round).
    spot_depth, neighbour_depth
        Transformer blocks of the spot branch, hypergraph blocks of the neighbour branch.
    dropout
        Dropout rate in [0, 1).
    grid_tokens
        Neighbour tiles per spot (5 x 5).
    prompt_k
        Nearest prompts each spot attends to.
    lam
        Weight of the branch losses beside the fused prediction's (eq. 10 of the paper).
    attention_window
        Sections with more spots attend within spatial windows of this many spots (memory linear in spots).
    use_spot_branch, use_neighbour_branch, use_prompts, use_image
        Switch parts off for ablations.
    kriged_field
        Add the prompts' simple kriging (one kernel, chosen on the prompts by marginal likelihood) to the
        network's prompt field: a sixth member of its per-gene mixture, in every training step (with that step's
        prompts) and when predicting (each cross-fitted pass kriges its own prompts only). An option, off by
        default: it lifts the network alone on smoothed targets (her2st +0.03 / +0.05 PCC at 10 / 20% random
        prompts, MOB +0.01 / +0.02) but the adaptive variant, whose in-context layer already kriges the prompts,
        by +0.001 on average (docs/benchmarks.md); training costs a kriging per step, and predicting with the
        in-context layer holds one (spots x genes) float32 field per pass (six in all; ``tl.impute`` refuses, before
        writing anything, where they would not fit in the available memory).
    section_norm
        Standardise each image feature over the section's spots (its mean and standard deviation there; the
        neighbour tiles by the same) before the network reads it, in training and when predicting, so that a
        section-wide shift of the features (stain, scanner) is removed. A prediction then depends on which spots
        are passed together (predict a section whole). An option, off by default: on a patient the network never
        saw (her2st A1, A2, trained on C2-C6) the adaptive variant gains +0.003 PCC on average, within patient C and
        on MOB it loses 0.0075 and 0.003, the section's mean features saying something about its expression there
        (docs/benchmarks.md, "A patient the network never saw, with its image"). Refused with ``use_image=False``.
    """

    n_genes: int = 0
    feature_dim: int = 0
    variant: str = "adaptive"
    hidden: int = 128
    heads: int = 4
    spot_depth: int = 2
    neighbour_depth: int = 1
    dropout: float = 0.1
    grid_tokens: int = 25
    prompt_k: int = 16
    lam: float = 0.3
    attention_window: int = 1024
    use_spot_branch: bool = True
    use_neighbour_branch: bool = True
    use_prompts: bool = True
    use_image: bool = True
    kriged_field: bool = False
    section_norm: bool = False

    def __post_init__(self) -> None:
        """Refuse settings no network can be built from (``tl.fit`` arguments and model files alike)."""
        minimum = {"n_genes": 0, "feature_dim": 0, "hidden": 1, "heads": 1, "spot_depth": 0, "neighbour_depth": 0,
                   "grid_tokens": 1, "prompt_k": 1, "attention_window": 16}  # fmt: skip
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"`{name}` must be an integer, got {value!r}.")
            if value < low:
                raise ValueError(f"`{name}` must be at least {low}, got {value}.")
            setattr(self, name, int(value))
        for name in SWITCHES:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"`{name}` must be True or False, got {getattr(self, name)!r}.")
            setattr(self, name, bool(getattr(self, name)))
        for name, (low, high) in {"dropout": (0.0, 1.0), "lam": (0.0, math.inf)}.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not low <= value < high:
                raise ValueError(f"`{name}` must be a number in [{low}, {high}), got {value!r}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown variant {self.variant!r}; choose one of {list(VARIANTS)}.")
        if self.hidden % self.heads or self.hidden % 4:
            raise ValueError(f"`hidden` ({self.hidden}) must be a multiple of `heads` ({self.heads}) and of 4.")
        if not self.use_image and not self.use_prompts:
            raise ValueError("With neither the image nor the prompts the model has no input.")
        if self.kriged_field and (self.variant == "paper" or not self.use_prompts):
            raise ValueError("`kriged_field` adds to the prompt field, which only the 'propagated' and 'adaptive' "
                             "variants with `use_prompts=True` have.")  # fmt: skip
        if self.section_norm and not self.use_image:
            raise ValueError("`section_norm` standardises the image features, which a network with `use_image=False` "
                             "does not read.")  # fmt: skip
        if self.variant == "paper" and not self.use_image:
            raise ValueError("The paper's variant reads the prompts only through the image branches; `use_image=False` "
                             "leaves it without input. Use `variant='propagated'` for a prompts-only model.")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (as saved in model files)."""
        return asdict(self)


#: The fields of :class:`ModelConfig` a user sets (the others come from the data).
ARCHITECTURE = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("n_genes", "feature_dim"))


def architecture(config: ModelConfig | Mapping[str, Any] | None, **settings: Any) -> dict[str, Any]:
    """The architecture fields of ``config`` with flat ``settings`` applied on top (each value checked).

    ``config`` is a :class:`ModelConfig`, a dict of its fields or ``None``; ``settings`` win; unknown fields are
    refused.
    """
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, ModelConfig):
        base = {k: v for k, v in config.to_dict().items() if k in ARCHITECTURE}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise TypeError(f"`config` must be a ModelConfig or a dict of its fields, got {type(config).__name__}.")
    merged = {**base, **settings}
    unknown = sorted(set(merged) - set(ARCHITECTURE))
    if unknown:
        raise TypeError(f"Unknown architecture settings {unknown}; ModelConfig has {list(ARCHITECTURE)}.")
    ModelConfig(**merged)  # every value checked, before any work
    return merged


@dataclass
class InputSpec:
    """What a trained model needs of a section, checked by :meth:`check` before every prediction.

    Attributes
    ----------
    genes
        The genes predicted, in order.
    use_rep
        ``obsm`` key of the image features.
    hypergraph_key
        ``key_added`` of ``pp.build_hypergraph``.
    layer
        Expression layer (``None``: ``.X``).
    normalization
        How the training expression was prepared: ``tl.prepare_targets``' record (``protocol``, ``target_sum``,
        ``log1p``, ``smooth``, ...) or the user's own (``log1p``, ``log1p_base``); and ``library_size``, the median
        expression summed over ``genes`` per spot (log1p undone).
    embedding
        How the features were made (``pp.embed_tiles``: encoder, its fingerprint, tile size, mpp, grid, input size,
        width); empty for features made otherwise.
    spot_pitch
        Median distance between neighbouring spots of the training sections (coordinate units), for reference.
    """

    genes: list[str]
    use_rep: str
    hypergraph_key: str
    layer: str | None = None
    normalization: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    spot_pitch: float | None = None

    #: Keys of the former one-dict record (format 1) that belong to the input description.
    FIELDS = ("use_rep", "hypergraph_key", "layer", "normalization", "embedding", "spot_pitch")

    def check(self, adata: AnnData, prompt: np.ndarray | None = None) -> None:
        """Refuse a section whose expression or features were not made the way the training data were.

        Checks the target normalisation (``tl.prepare_targets``' record, or ``uns['log1p']`` for the user's own;
        with ``prompt``, also the scale of the prompt spots' values) and the encoder and tile geometry of the
        features (``pp.embed_tiles``' record). Raises :class:`~phg2st_sc.InputMismatchError` with the fix.
        """
        from phg2st_sc._model._inputs import check_embedding, check_normalisation
        from phg2st_sc._utils import as_dense

        record = self.record()
        check_embedding(record, adata, self.use_rep)
        values = None
        if prompt is not None and all(g in adata.var_names for g in self.genes):
            sub = adata[np.asarray(prompt, dtype=bool), self.genes]
            x = sub.X if self.layer is None else sub.layers.get(self.layer)
            if x is not None and np.dtype(getattr(x, "dtype", object)).kind in "biuf":  # others: refused later
                values = as_dense(x, dtype=np.float32)
        check_normalisation(record, adata, values)

    def record(self) -> dict[str, Any]:
        """The description as plain values (saved in the model file; ``genes`` apart)."""
        out = {k: getattr(self, k) for k in self.FIELDS}
        out["encoder"] = self.embedding.get("encoder", "")  # read by earlier versions
        out["encoder_fingerprint"] = self.embedding.get("encoder_fingerprint", "")
        return out

    @classmethod
    def from_record(cls, genes: list[str], record: Mapping[str, Any]) -> InputSpec:
        """The description from :meth:`record` (or a format-1 ``info`` dict, whose other keys are ignored)."""
        embedding = dict(record.get("embedding") or {})
        if not embedding and record.get("encoder"):  # format 1, before the embedding record
            embedding = {"encoder": record["encoder"], "encoder_fingerprint": record.get("encoder_fingerprint", "")}
        return cls(genes=list(genes), use_rep=record["use_rep"], hypergraph_key=record["hypergraph_key"],
                   layer=record.get("layer"), normalization=dict(record.get("normalization") or {}),
                   embedding=embedding, spot_pitch=record.get("spot_pitch"))  # fmt: skip
