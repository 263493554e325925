# Sphinx configuration of the governed.rollback docs site (started from `antsibull-docs sphinx-init`).
# Offline on purpose: no intersphinx inventories are fetched, so the site builds on a machine without Internet.

project = 'governed.rollback'
copyright = 'governed.rollback maintainers'
title = 'governed.rollback: audited rollbacks'
html_short_title = 'governed.rollback'

extensions = ['sphinx.ext.autodoc', 'sphinx_antsibull_ext', 'myst_parser']
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
myst_heading_anchors = 3

pygments_style = 'ansible'
highlight_language = 'YAML+Jinja'

html_theme = 'sphinx_ansible_theme'
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False

default_role = 'any'
nitpicky = True
