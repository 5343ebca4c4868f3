"""Every slot name the package reads or writes, in one place."""

from __future__ import annotations

#: The named encoders of ``pp.embed_tiles`` (the registry in ``_model._encoders`` is keyed by exactly these; the
#: CLI offers them without importing torch).
ENCODER_NAMES = ("efficientnet_lite0", "uni", "resnet50")


class Keys:
    """Names of the AnnData slots used by phg2st-sc.

    Nothing else in the package spells these strings; change them here only.
    """

    # obs
    SECTION = "section"
    PATIENT = "patient"
    ARRAY_ROW = "array_row"
    ARRAY_COL = "array_col"
    SPOT_ID = "spot_id"
    PROMPT = "phg2st_prompt"
    VIRTUAL = "phg2st_virtual"  # pp.virtual_spots: spots placed on the tissue without a measurement
    # obsm / uns["spatial"]
    SPATIAL = "spatial"
    # layers
    PHG2ST = "phg2st"
    SMOOTHED = "smoothed"
    # uns
    SMOOTH_UNS = "phg2st_smooth"
    GENES_UNS = "phg2st_genes"
    TARGETS_UNS = "phg2st_targets"
    WRITTEN_UNS = "phg2st_written"  # slot -> keys this package wrote (never replaced without `overwrite`: others)
    # uns["spatial"][library_id]
    IMAGES = "images"
    HIRES = "hires"
    SCALEFACTORS = "scalefactors"
    HIRES_SCALEF = "tissue_hires_scalef"
    SPOT_DIAMETER = "spot_diameter_fullres"
    BIN_SIZE = "bin_size_um"  # Space Ranger (Visium HD): the bins are squares of this side
    METADATA = "metadata"
    IMAGE_PATH = "source_image_path"
    MPP = "microns_per_pixel"
    IMAGE_SHAPE = "image_shape"
    IMAGE_NOTE = "image_note"

    # defaults of the writers' keys
    HYPERGRAPH = "phg2st"  # pp.build_hypergraph's key_added, tl.fit's hypergraph_key
    LATENT = "X_phg2st"  # tl.impute's latent_key

    # Derived names: every slot whose name is built from another key is spelled here, and only here.
    @staticmethod
    def baseline_layer(method: str) -> str:
        """Default layer name of a baseline's predictions."""
        return f"baseline_{method}"

    @staticmethod
    def embedding(encoder: str) -> str:
        """``obsm`` key of an encoder's tile embeddings (``pp.embed_tiles``' default ``key_added``)."""
        return f"X_{encoder}"

    @staticmethod
    def tile_index(use_rep: str) -> str:
        """``obsm`` key of each spot's neighbour-window index into the stored tiles (``pp.embed_tiles``)."""
        return f"{use_rep}_neighbours"

    @staticmethod
    def incidence(key: str) -> str:
        """``obsp`` key of the spot hypergraph's incidence matrix (``pp.build_hypergraph``)."""
        return f"{key}_incidence"

    @staticmethod
    def distances(key: str) -> str:
        """``obsp`` key of the spot hypergraph's combined distances."""
        return f"{key}_distances"

    @staticmethod
    def neighbour_hyperedges(key: str) -> str:
        """``obsm`` key of the tile sub-hypergraphs of every spot's window."""
        return f"{key}_neighbour_hyperedges"

    @staticmethod
    def uncertainty(layer: str, part: str) -> str:
        """Slot of ``tl.impute``'s predictive uncertainty for predictions in ``layer``.

        ``part``: ``"std"``, ``"lo"``, ``"hi"`` (layers: standard deviation, interval bounds) or ``"std_mean"``
        (``obs``: each spot's mean standard deviation over genes).
        """
        if part not in ("std", "lo", "hi", "std_mean"):
            raise ValueError(f"Unknown uncertainty slot {part!r}.")
        return f"{layer}_{part}"

    @staticmethod
    def hypergraph(key: str) -> str:
        """``uns`` key of the hypergraph's parameters."""
        return f"{key}_hypergraph"


class SpatialDataKeys:
    """Element and column names used when converting to and from SpatialData."""

    TABLE = "table"
    REGION_KEY = "region"
    INSTANCE_KEY = "spot_index"
    COORDINATE_SYSTEM = "global"

    @staticmethod
    def image(library_id: str) -> str:
        """Name of a section's image element."""
        return f"{library_id}_image"

    @staticmethod
    def shapes(library_id: str) -> str:
        """Name of a section's spot-circle element."""
        return f"{library_id}_spots"
