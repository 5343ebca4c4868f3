"""Fixtures shared by the plot tests."""

from __future__ import annotations

import pytest

import phg2st_sc as phg2st


@pytest.fixture
def predicted(c2):
    """C2 with three genes, 10% prompts (seed 0) and IDW predictions in `layers['baseline_idw']`."""
    work = phg2st.tl.prepare_targets(c2, "heldout", panel=["ERBB2", "KRT8", "COL3A1"])
    phg2st.tl.select_prompts(work, seed=0)
    phg2st.tl.baseline(work, method="idw")
    return work
