"""The per-patient HTML page: heatmaps, patch montage, transfer bars and the QuPath files."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..evaluation.html_report import STYLE  # one look for the report and its patient pages
from ..fileio import write_text
from .transfer import NO_TRANSFER, Transfer


@dataclass(frozen=True)
class PageContent:
    """What one patient page shows; image paths are siblings of the page."""

    patient_id: str
    model: str
    compare_model: str | None
    risk: float | None
    facts: Sequence[tuple[str, str]]
    heatmaps: Sequence[tuple[str, Path]]
    geojson: Sequence[tuple[str, Path]]
    montage: Path | None
    transfer: Transfer | None
    transfer_png: Path | None
    notices: Sequence[str]
    problems: Sequence[str]
    links: Sequence[tuple[str, str]] = ()
    scale: str = "absolute"


def _e(text: object) -> str:
    return html.escape(str(text))


def _transfer_table(transfer: Transfer) -> str:
    if transfer.none:
        return (
            f"<p><b>{_e(NO_TRANSFER)}</b>: every source's weight w is 0, so this patient's encoder is "
            "theta0 alone; which sources the top-k picked among the tied zeros means nothing.</p>"
        )
    rows = "".join(
        f"<tr><td>{_e(s)}</td><td>{w:.4f}</td><td>{lam:.4f}</td><td>{c:.4f}</td><td>{'yes' if sel else ''}</td></tr>"
        for s, w, lam, c, sel in zip(
            transfer.sources, transfer.w, transfer.lam, transfer.contribution, transfer.selected, strict=True
        )
    )
    return (
        "<table><thead><tr><th>source</th><th>w</th><th>lambda</th><th>w (1 - lambda) if selected</th>"
        f"<th>selected</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def write_page(path: Path, content: PageContent) -> Path:
    """Write the page (atomically) and return its path."""
    c = content
    parts = [f"<h1>Patient {_e(c.patient_id)}</h1>"]
    facts = [("model", c.model), *c.facts]
    if c.risk is not None:
        facts.append(("predicted risk (-sum of S(t), higher = earlier events)", f"{c.risk:.4f}"))
    parts.append(
        "<table><tbody>"
        + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts)
        + "</tbody></table>"
    )
    if c.links:
        parts.append(" | ".join(f'<a href="{_e(href)}">{_e(text)}</a>' for text, href in c.links))
    if c.problems:
        parts.append(
            '<h2>Problems</h2><ul class="warn">' + "".join(f"<li>{_e(p)}</li>" for p in c.problems) + "</ul>"
        )
    if c.notices:
        parts.append('<ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in c.notices) + "</ul>")
    versus = f" beside {_e(c.compare_model)}" if c.compare_model else ""
    colour = (
        "the patch's attention percentile among all of this patient's patches"
        if c.scale == "percentile"
        else "the patch's attention on one scale from 0 to the patient's largest weight "
        "(the dashed line on the colour bar is uniform attention, 1/N)"
    )
    parts.append(
        f"<h2>Attention heatmaps{versus}</h2><p class='note'>Colour = {colour} (ABMIL's softmax "
        "weights; for a merged model, those of the patient's merged encoder). Raw weights sum to one "
        "over the patient.</p>"
    )
    for slide_id, png in c.heatmaps:
        parts.append(f"<h3>{_e(slide_id)}</h3><img src='{_e(png.name)}' alt='heatmap {_e(slide_id)}'>")
    if c.montage is not None:
        parts.append(
            f"<h2>Most and least attended patches</h2><img src='{_e(c.montage.name)}' alt='patch montage'>"
        )
    if c.transfer is not None:
        parts.append("<h2>Transfer: which cancers this patient's model drew on</h2>")
        if c.transfer_png is not None:
            parts.append(f"<img src='{_e(c.transfer_png.name)}' alt='transfer coefficients'>")
        parts.append(_transfer_table(c.transfer))
    if c.geojson:
        links = "".join(f"<li><a href='{_e(p.name)}'>{_e(p.name)}</a> ({_e(s)})</li>" for s, p in c.geojson)
        parts.append(
            "<h2>For QuPath</h2><p class='note'>Open the slide in QuPath, then File &gt; Import objects "
            "from file (or drag the file onto the viewer). Each patch is a tile of the class Attention, "
            "drawn in its heatmap colour, with the measurements Attention, Attention percentile and "
            f"Attention x N; Measure &gt; Show measurement maps colours them.</p><ul>{links}</ul>"
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(c.patient_id)}: stephctl explain"
        f"</title><style>{STYLE}</style></head><body>" + "".join(parts) + "</body></html>\n"
    )
    return write_text(path, page)


def write_index(path: Path, title: str, rows: Sequence[tuple[str, str, str]]) -> Path:
    """A list of patient pages: ``(patient_id, model, relative href)`` rows."""
    body = "".join(
        f"<tr><td><a href='{_e(href)}'>{_e(pid)}</a></td><td>{_e(model)}</td></tr>"
        for pid, model, href in rows
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{STYLE}</style>"
        f"</head><body><h1>{_e(title)}</h1><table><thead><tr><th>patient</th><th>model</th></tr></thead>"
        f"<tbody>{body}</tbody></table></body></html>\n"
    )
    return write_text(path, page)
