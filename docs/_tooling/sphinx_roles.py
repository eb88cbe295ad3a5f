"""MkDocs hook: the docstrings' Sphinx roles (``:func:`x```) shown as plain code in the API reference.

bpm's docstrings are written for ``help()`` and editors, where ``:func:``/``:mod:``/``:class:``
name what is meant; mkdocstrings renders the backquoted name as code and leaves the role's text in
front of it, which this removes.
"""
from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|mod|class|meth|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    return _ROLE.sub("", html)
