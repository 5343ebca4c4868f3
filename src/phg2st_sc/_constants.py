"""Every slot name the package reads or writes, in one place."""

from __future__ import annotations


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
    METADATA = "metadata"
    IMAGE_PATH = "source_image_path"
    MPP = "microns_per_pixel"
    IMAGE_SHAPE = "image_shape"
    IMAGE_NOTE = "image_note"

    @staticmethod
    def baseline_layer(method: str) -> str:
        """Default layer name of a baseline's predictions."""
        return f"baseline_{method}"


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
