"""Sphinx configuration for trice."""

from __future__ import annotations

project = "trice"
author = "the trice developers"
copyright = "2026, the trice developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "trio": ("https://trio.readthedocs.io/en/stable", None),
}
# No network here: intersphinx inventories are optional; missing ones must not fail -W builds.
intersphinx_disabled_reftypes = ["*"]
intersphinx_timeout = 1
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
suppress_warnings = ["intersphinx.external"]
