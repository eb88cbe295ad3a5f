"""``identities.html``: one row per identity with its best crop from every track, grouped by camera.

Same approach as the rank-list page (:mod:`bpm.vis.html`): static, relative image paths, inline
style, and the script that marks images that failed to load, which the browser test reads.
"""
from __future__ import annotations

import html
from typing import Any, Sequence
from urllib.parse import quote

from bpm.vis.html import LOAD_CHECK_SCRIPT

_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
.identity { margin: 0 0 1em 0; padding: 0.4em; background: #fff; border: 1px solid #ddd; }
.camera { display: inline-block; vertical-align: top; margin-right: 1.2em; }
.camera img { height: 96px; margin-right: 2px; image-rendering: pixelated; }
.broken::after { content: " (image missing)"; color: #c00; font-weight: bold; }
"""


def render_identities(title: str, records: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style>", "</head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    for record in records:
        label = f"identity {record['id']}" + (f" ({record['name']})" if record["name"] else "")
        cameras = record["cameras"]
        parts.append(f'<div class="identity" data-id="{record["id"]}"><p><b>{html.escape(label)}</b> &middot; '
                     f"{len(cameras)} camera(s): {html.escape(', '.join(cameras))}</p>")
        for camera, tracks in cameras.items():
            parts.append(f'<div class="camera"><p>{html.escape(camera)}</p>')
            for track in tracks:
                if track["crop"]:
                    caption = f"track {track['track']}, frames {track['first_frame']}-{track['last_frame']}"
                    parts.append(f'<img src="{quote(track["crop"])}" alt="{html.escape(caption)}" '
                                 f'title="{html.escape(caption)}">')
            parts.append("</div>")
        parts.append("</div>")
    parts.append(f"<script>{LOAD_CHECK_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
