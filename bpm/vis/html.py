"""A static ``index.html`` beside the rank-list JPEGs, to scroll through them in a browser.

No server, no external assets: images are referenced by relative paths, the style sheet and a
few lines of script are inline. The script marks every image that failed to load (a moved or
deleted JPEG) with a visible note and records the outcome in ``data-`` attributes, which the
tests read back from a headless browser.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
.entry { margin: 0 0 1.2em 0; }
.entry p { margin: 0 0 0.3em 0; }
.entry img { display: block; image-rendering: pixelated; }
.broken::after { content: " (image missing)"; color: #c00; font-weight: bold; }
.legend span { padding: 0 0.4em; color: #fff; }
.matches { margin: 0.3em 0 0 0; font-size: 90%; color: #333; }
.matches img { margin-top: 0.2em; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img");
  var loaded = 0;
  images.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    img.setAttribute("data-status", ok ? "ok" : "broken");
    if (ok) { loaded += 1; } else { (img.closest(".entry") || img.parentElement).classList.add("broken"); }
  });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-loaded", String(loaded));
});
"""
LOAD_CHECK_SCRIPT = _SCRIPT
"""Marks images that failed to load and records the counts in ``data-`` attributes (other pages reuse it)."""


@dataclass(frozen=True)
class PageEntry:
    """One rank list on the page: its picture (relative to the page), query name, AP and first-match rank."""

    picture: str
    query_name: str
    ap: float
    first_match_rank: int
    matches_picture: str = ""            # strip of the true matches (second, smaller row); "" for none
    match_ranks: tuple[int, ...] = ()    # their ranks, in strip order
    num_matches: int = 0                 # all true matches (the strip may show the first few only)


def _ap_text(ap: float) -> str:
    return "n/a (no true match in the gallery)" if math.isnan(ap) else f"{ap:.2%}"


def _rank_text(rank: int) -> str:
    return "none" if rank < 1 else str(rank)


def _matches_row(entry: PageEntry, name: str) -> str:
    """The second, smaller row: the query's true matches (same identity, other cameras) with their ranks."""
    if entry.num_matches == 0:
        return '<p class="matches">No true match in the gallery.</p>'
    shown = len(entry.match_ranks)
    ranks = ", ".join(str(r) for r in entry.match_ranks)
    more = f" (the first {shown} of {entry.num_matches} shown)" if shown < entry.num_matches else ""
    picture = (f'<img class="matches-strip" src="{quote(entry.matches_picture)}" alt="true matches of {name}">'
               if entry.matches_picture else "")
    return (f'<div class="matches" data-ranks="{ranks}">True matches (same identity, other cameras) at rank '
            f"{ranks}{more}:{picture}</div>")


def render_index(title: str, entries: Sequence[PageEntry], notes: Sequence[str] = ()) -> str:
    """The page's text; every dynamic string is escaped, every picture path URL-quoted."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    parts.append('<p class="legend">Query first (no border), then the gallery ranking: '
                 '<span style="background:#0a0">green</span> same identity, '
                 '<span style="background:#c00">red</span> other identity. Below each, the smaller row shows '
                 "every true match with its rank (green: within the rank list, red: below it).</p>")
    for entry in entries:
        name = html.escape(entry.query_name)
        parts.append(
            '<div class="entry">'
            f"<p><b>{name}</b> &middot; AP {html.escape(_ap_text(entry.ap))} &middot; "
            f"first match at rank {_rank_text(entry.first_match_rank)}</p>"
            f'<a href="{quote(entry.picture)}"><img src="{quote(entry.picture)}" alt="rank list of {name}"></a>'
            f"{_matches_row(entry, name)}"
            "</div>"
        )
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_links(title: str, pages: Sequence[tuple[str, str]]) -> str:
    """A page linking to one index per test set (the ``combined`` dataset has three)."""
    items = "\n".join(f'<li><a href="{quote(href)}">{html.escape(label)}</a></li>' for label, href in pages)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>\n<h1>{html.escape(title)}</h1>\n<ul>\n{items}\n</ul>\n"
        "</body></html>\n"
    )


def write_page(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
