"""Charts of the dashboard as inline SVG, drawn on the server: no script, no chart library.

Two shapes cover every chart: a stacked horizontal bar (dedup and compression savings,
a repo's stored share, a canary's split, the store against its watermarks) and a line
chart (bytes by source over time). Colours come from CSS classes of the one stylesheet
(`static/style.css`), never from `style` attributes, so the pages keep a strict
Content-Security-Policy. Shapes stretch to the page's width (`preserveAspectRatio="none"`
with strokes that do not scale) and every label is HTML beside the drawing, so text
stays readable on a phone. Every label is escaped; each chart carries its numbers in
`data-*` attributes and `<title>`s for tests and screen readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from markupsafe import Markup, escape


@dataclass(frozen=True, slots=True)
class Part:
    label: str
    value: float
    css: str  # a class of style.css: its fill colour
    key: str = ""  # data-part, for tests


@dataclass(frozen=True, slots=True)
class Mark:
    label: str
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    label: str
    values: Sequence[float]
    css: str


_W = 1000.0  # drawing units across; the SVG stretches to the page


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def stacked_bar(parts: Sequence[Part], *, total: float | None = None, marks: Sequence[Mark] = (), height: int = 24,
                label: str = "", fmt: Callable[[float], str] = _num, chart_id: str = "") -> Markup:
    """One bar split into `parts` (negative values count as 0), out of `total` (default:
    their sum), with vertical `marks` (watermarks). An empty total draws an empty bar."""
    values = [max(0.0, float(p.value)) for p in parts]
    whole = max(float(total) if total is not None else 0.0, sum(values), *(m.value for m in marks), 0.0)
    out = [(f'<svg class="bar" viewBox="0 0 {_W:g} {height}" preserveAspectRatio="none" role="img" '
            f'height="{height}"{_id(chart_id)} aria-label="{escape(label)}">'),
           f'<rect class="track" x="0" y="0" width="{_W:g}" height="{height}"/>']
    x = 0.0
    for part, value in zip(parts, values):
        w = _W * value / whole if whole else 0.0
        share = value / whole if whole else 0.0
        out.append(f'<rect class="{escape(part.css)}" x="{_num(x)}" y="0" width="{_num(w)}" height="{height}" '
                   f'data-part="{escape(part.key or part.css)}" data-value="{_num(value)}">'
                   f'<title>{escape(part.label)}: {escape(fmt(value))} ({share:.1%})</title></rect>')
        x += w
    for mark in marks:
        mx = _W * mark.value / whole if whole else 0.0
        out.append(f'<line class="mark" x1="{_num(mx)}" x2="{_num(mx)}" y1="0" y2="{height}" '
                   f'vector-effect="non-scaling-stroke" data-mark="{escape(mark.label)}" data-value="{_num(mark.value)}">'
                   f'<title>{escape(mark.label)}: {escape(fmt(mark.value))}</title></line>')
    out.append("</svg>")
    return Markup("".join(out))


def legend(parts: Sequence[Part], fmt: Callable[[float], str] = _num) -> Markup:
    """The HTML legend of a stacked bar: a swatch, the label and the value of each part."""
    items = "".join(
        f'<li><svg class="swatch" viewBox="0 0 10 10" width="10" height="10" aria-hidden="true">'
        f'<rect class="{escape(p.css)}" width="10" height="10"/></svg>{escape(p.label)}: '
        f'<span class="num">{escape(fmt(max(0.0, float(p.value))))}</span></li>'
        for p in parts
    )
    return Markup(f'<ul class="legend">{items}</ul>')


def line_chart(series: Sequence[Series], x_labels: Sequence[str], *, height: int = 160,
               fmt: Callable[[float], str] = _num, label: str = "", chart_id: str = "") -> Markup:
    """Each series as a line over equally spaced points (all series have as many values
    as the first), a y axis from 0 to the largest value, `x_labels` spread under it
    (first, ..., last) and a legend with each series' sum."""
    n = max((len(s.values) for s in series), default=0)
    top = max((max(s.values, default=0.0) for s in series), default=0.0)
    scale = top if top > 0 else 1.0
    step = _W / n if n else _W
    svg = [(f'<svg class="line" viewBox="0 0 {_W:g} {height}" preserveAspectRatio="none" role="img" '
            f'height="{height}"{_id(chart_id)} aria-label="{escape(label)}">'),
           f'<rect class="track" x="0" y="0" width="{_W:g}" height="{height}"/>']
    for frac in (0.25, 0.5, 0.75):
        y = _num(height * frac)
        svg.append(f'<line class="grid" x1="0" x2="{_W:g}" y1="{y}" y2="{y}" vector-effect="non-scaling-stroke"/>')
    for s in series:
        pts = " ".join(f"{_num(step * (i + 0.5))},{_num(height - 2 - (height - 4) * max(0.0, v) / scale)}"
                       for i, v in enumerate(s.values))
        svg.append(f'<polyline class="{escape(s.css)}" points="{pts}" fill="none" vector-effect="non-scaling-stroke" '
                   f'data-series="{escape(s.key)}" data-total="{_num(sum(s.values))}">'
                   f'<title>{escape(s.label)}: {escape(fmt(sum(s.values)))}</title></polyline>')
    svg.append("</svg>")
    ticks = "".join(f"<span>{escape(t)}</span>" for t in x_labels)
    keys = "".join(
        f'<li><svg class="swatch" viewBox="0 0 10 10" width="10" height="10" aria-hidden="true">'
        f'<rect class="{escape(s.css)}" width="10" height="10"/></svg>{escape(s.label)}: '
        f'<span class="num" data-series-total="{escape(s.key)}" data-value="{_num(sum(s.values))}">'
        f'{escape(fmt(sum(s.values)))}</span></li>'
        for s in series
    )
    return Markup(
        f'<figure class="chart"><div class="y-top">{escape(fmt(top))}</div>{"".join(svg)}'
        f'<div class="x-ticks">{ticks}</div><ul class="legend">{keys}</ul></figure>'
    )


def _id(chart_id: str) -> str:
    return f' id="{escape(chart_id)}"' if chart_id else ""
