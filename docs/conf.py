"""Sphinx configuration of the phg2st-sc documentation (builds offline, warnings are errors in CI)."""

from __future__ import annotations

import sys
import warnings
from datetime import date
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))

# sphinx-autodoc-typehints calls an API that Sphinx 10 will remove; nothing to act on here.
warnings.filterwarnings("ignore", message=".*set_application.*is deprecated")

project = "phg2st-sc"
author = "phg2st-sc developers"
copyright = f"{date.today():%Y}, {author}"
release = _version("phg2st-sc")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "inherited-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_document_param_types = False
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath"]
nb_execution_mode = "off"  # tutorials are executed on the real data and committed with their outputs
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_title = "phg2st-sc"
html_theme_options = {"repository_url": "https://github.com/phg2st-sc/phg2st-sc", "use_repository_button": False}
