"""Sphinx configuration for trice."""

from __future__ import annotations

import os
import sys

# The local extension that draws state diagrams from the code's transition tables.
sys.path.insert(0, os.path.abspath("_ext"))

project = "trice"
author = "the trice developers"
copyright = "2026, the trice developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
    "trice_tables",
]

# Intersphinx needs the network to fetch python's and trio's inventories, and an unreachable
# inventory is a warning (so an error under -W).  The build works offline by default; set
# TRICE_DOCS_INTERSPHINX=1 to link to the Python and trio docs.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
if os.environ.get("TRICE_DOCS_INTERSPHINX", "") not in ("", "0"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "trio": ("https://trio.readthedocs.io/en/stable", None),
    }
intersphinx_timeout = 5

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build", "examples"]
