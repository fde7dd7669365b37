"""Server-side inline SVG: a line chart, a bar chart and a lineage DAG.

Everything returns :class:`markupsafe.Markup` ready to drop into a template. Every chart carries a
``<title>`` and ``<desc>`` referenced by ``aria-labelledby`` (``role="img"``), axis labels, and
per-point ``<title>`` tooltips. No JavaScript and no external assets: the pages work offline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

_ids = itertools.count(1)

PALETTE = ("#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490")


def _uid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def _fmt(v: float) -> str:
    """Compact tick/tooltip number: 0.00123 -> 0.00123, 12345 -> 12,345, 1.5e-7 -> 1.5e-07."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2g}"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps; whole numbers only when ``integer``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    if integer:
        raw = max(raw, 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    t = start
    while t <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _head(uid: str, title: str, desc: str, width: int, height: int, extra_class: str,
          role: str = "img") -> list[str]:
    # role="img" hides the children from assistive tech; the lineage graph uses "group" so its
    # node links stay reachable.
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {extra_class}" viewBox="0 0 {width} {height}" '
        f'role="{role}" aria-labelledby="{uid}-t {uid}-d" preserveAspectRatio="xMidYMid meet" '
        f'width="{width}" height="{height}">',
        f'<title id="{uid}-t">{escape(title)}</title>',
        f'<desc id="{uid}-d">{escape(desc)}</desc>',
    ]


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None
    dashed: bool = False


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    desc: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 880,
    height: int = 300,
    x_integer: bool = False,
    empty_text: str = "No data yet",
) -> Markup:
    """Line chart of one or more series of (x, y) points; markers with tooltips; legend when >1 series."""
    uid = _uid("lc")
    pts_all = [(x, y) for s in series for x, y in s.points
               if y is not None and math.isfinite(x) and math.isfinite(y)]
    if not desc:
        desc = _auto_desc(series, x_label, y_label)
    out = _head(uid, title, desc, width, height, "line-chart")
    left, right, top, bottom = 64, 16, 16 + (18 if len(series) > 1 else 0), 46
    pw, ph = width - left - right, height - top - bottom
    if not pts_all:
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot-bg"/>')
        out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="empty">'
                   f'{escape(empty_text)}</text>')
        out.append("</svg>")
        return Markup("".join(out))
    xs = [p[0] for p in pts_all]
    ys = [p[1] for p in pts_all]
    xt = nice_ticks(min(xs), max(xs), 6, integer=x_integer)
    x0, x1 = xt[0], xt[-1]
    yt = nice_ticks(min(ys), max(ys), 5)
    y0, y1 = yt[0], yt[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot-bg"/>')
    out.append('<g class="grid" aria-hidden="true">')
    for t in yt:
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
    out.append("</g>")
    out.append('<g class="axis" aria-hidden="true">')
    for t in yt:
        out.append(f'<text x="{left - 8}" y="{sy(t) + 4:.1f}" text-anchor="end">{escape(_fmt(t))}</text>')
    for t in xt:
        if x0 <= t <= x1:
            out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 18}" text-anchor="middle">{escape(_fmt(t))}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis-line"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" class="axis-line"/>')
    out.append("</g>")
    if x_label:
        out.append(f'<text class="axis-label" x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">'
                   f'{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text class="axis-label" transform="translate(14 {top + ph / 2}) rotate(-90)" '
                   f'text-anchor="middle">{escape(y_label)}</text>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in s.points if y is not None and math.isfinite(x) and math.isfinite(y)]
        if not pts:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<g class="series" data-series="{escape(s.name)}">')
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"{dash}/>')
        step = max(1, len(pts) // 60)
        for j, (x, y) in enumerate(pts):
            if j % step and j != len(pts) - 1:
                continue
            r = 3.5 if len(pts) <= 30 else 2
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" fill="{color}">'
                       f'<title>{escape(s.name)}: {escape(x_label or "x")} {escape(_fmt(x))}, '
                       f'{escape(y_label or "y")} {escape(_fmt(y))}</title></circle>')
        out.append("</g>")
    if len(series) > 1:
        lx = left
        for i, s in enumerate(series):
            color = s.color or PALETTE[i % len(PALETTE)]
            out.append(f'<g class="legend"><rect x="{lx}" y="4" width="12" height="12" rx="2" fill="{color}"/>'
                       f'<text x="{lx + 16}" y="14">{escape(s.name)}</text></g>')
            lx += 28 + 7 * len(s.name)
    out.append("</svg>")
    return Markup("".join(out))


def _auto_desc(series: Sequence[Series], x_label: str, y_label: str) -> str:
    parts = []
    for s in series:
        pts = [p for p in s.points if p[1] is not None and math.isfinite(p[1])]
        if not pts:
            continue
        first, last = pts[0], pts[-1]
        lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
        parts.append(f"{s.name}: {len(pts)} points from {x_label or 'x'} {_fmt(first[0])} to {_fmt(last[0])}; "
                     f"first {_fmt(first[1])}, last {_fmt(last[1])}, min {_fmt(lo)}, max {_fmt(hi)}.")
    return " ".join(parts) or "No data."


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    desc: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 720,
    bar_height: int = 24,
    color: str = PALETTE[0],
    max_items: int = 40,
) -> Markup:
    """Horizontal bar chart (category labels on the left stay readable on phones)."""
    uid = _uid("bc")
    shown = list(items)[:max_items]
    if not desc:
        desc = "; ".join(f"{k}: {_fmt(v)}" for k, v in shown) or "No data."
        if len(items) > max_items:
            desc += f"; and {len(items) - max_items} more"
    label_w = min(220, max(60, 8 * max((len(k) for k, _ in shown), default=4) + 12))
    left, right, top, bottom = label_w, 56, 26 if y_label else 8, 40 if x_label else 24
    height = top + bottom + max(1, len(shown)) * (bar_height + 8)
    out = _head(uid, title, desc, width, height, "bar-chart")
    pw = width - left - right
    if y_label:
        out.append(f'<text class="axis-label" x="{left - 8}" y="14" text-anchor="end" aria-hidden="true">'
                   f'{escape(y_label)}</text>')
    vmax = max((v for _, v in shown), default=0) or 1
    ticks = nice_ticks(0, vmax, 5)
    vmax = ticks[-1]
    plot_h = height - top - bottom
    out.append('<g class="grid" aria-hidden="true">')
    for t in ticks:
        x = left + t / vmax * pw
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
        out.append(f'<text class="axis" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f'{escape(_fmt(t))}</text>')
    out.append("</g>")
    for i, (k, v) in enumerate(shown):
        y = top + 4 + i * (bar_height + 8)
        w = max(1.0, v / vmax * pw)
        out.append(f'<g class="bar"><text class="bar-label" x="{left - 8}" y="{y + bar_height / 2 + 4:.1f}" '
                   f'text-anchor="end">{escape(_truncate(k, label_w // 8))}</text>'
                   f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_height}" rx="3" fill="{color}">'
                   f'<title>{escape(k)}: {escape(_fmt(v))}</title></rect>'
                   f'<text class="bar-value" x="{left + w + 6:.1f}" y="{y + bar_height / 2 + 4:.1f}">'
                   f'{escape(_fmt(v))}</text></g>')
    if x_label:
        out.append(f'<text class="axis-label" x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" '
                   f'aria-hidden="true">{escape(x_label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _truncate(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(1, n - 1)] + "…"


# -- lineage DAG -----------------------------------------------------------------------------------
@dataclass
class Node:
    id: str
    label: str
    sublabel: str = ""
    kind: str = "version"  # base_model | dataset | job | version | current
    href: str | None = None


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def add(self, node: Node) -> Node:
        if all(n.id != node.id for n in self.nodes):
            self.nodes.append(node)
        return node

    def link(self, src: str, dst: str) -> None:
        if (src, dst) not in self.edges:
            self.edges.append((src, dst))


def layer_nodes(graph: Graph) -> dict[str, int]:
    """Longest-path layering; sources are pulled right next to their first successor."""
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for a, b in graph.edges:
        if a in preds and b in preds:
            succs[a].append(b)
            preds[b].append(a)
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(nid: str) -> int:
        if nid in layer:
            return layer[nid]
        if nid in visiting:  # a cycle should never happen; break it
            return 0
        visiting.add(nid)
        d = 1 + max((depth(p) for p in preds[nid]), default=-1)
        visiting.discard(nid)
        layer[nid] = d
        return d

    for n in graph.nodes:
        depth(n.id)
    for n in graph.nodes:
        if not preds[n.id] and succs[n.id]:
            layer[n.id] = max(0, min(layer[s] for s in succs[n.id]) - 1)
    return layer


def lineage_graph(graph: Graph, *, title: str, desc: str = "") -> Markup:
    """Draw a small DAG left to right: layered columns, nodes as linked boxes, curved arrows."""
    uid = _uid("lg")
    layer = layer_nodes(graph)
    columns: dict[int, list[Node]] = {}
    for n in graph.nodes:
        columns.setdefault(layer[n.id], []).append(n)
    # One barycentre pass so edges cross less.
    order: dict[str, float] = {}
    preds: dict[str, list[str]] = {}
    for a, b in graph.edges:
        preds.setdefault(b, []).append(a)
    for col in sorted(columns):
        nodes = columns[col]
        for i, n in enumerate(nodes):
            ps = [order[p] for p in preds.get(n.id, []) if p in order]
            order[n.id] = sum(ps) / len(ps) if ps else float(i)
        nodes.sort(key=lambda n: order[n.id])
        for i, n in enumerate(nodes):
            order[n.id] = float(i)
    node_w, node_h, gap_x, gap_y, pad = 176, 52, 56, 18, 12
    ncols = max(columns) + 1 if columns else 1
    nrows = max((len(c) for c in columns.values()), default=1)
    width = pad * 2 + ncols * node_w + (ncols - 1) * gap_x
    height = pad * 2 + nrows * node_h + (nrows - 1) * gap_y
    pos: dict[str, tuple[float, float]] = {}
    for col, nodes in columns.items():
        col_h = len(nodes) * node_h + (len(nodes) - 1) * gap_y
        y0 = pad + (height - 2 * pad - col_h) / 2
        for i, n in enumerate(nodes):
            pos[n.id] = (pad + col * (node_w + gap_x), y0 + i * (node_h + gap_y))
    if not desc:
        names = {n.id: n.label for n in graph.nodes}
        desc = "; ".join(f"{names.get(a, a)} → {names.get(b, b)}" for a, b in graph.edges) or "No lineage."
    out = _head(uid, title, desc, width, height, "lineage", role="group")
    out.append(f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
               f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow"/>'
               f"</marker></defs>")
    out.append('<g class="edges" aria-hidden="true">')
    for a, b in graph.edges:
        if a not in pos or b not in pos:
            continue
        ax, ay = pos[a]
        bx, by = pos[b]
        x1, y1 = ax + node_w, ay + node_h / 2
        x2, y2 = bx - 2, by + node_h / 2
        mx = (x1 + x2) / 2
        out.append(f'<path d="M{x1:.1f},{y1:.1f} C{mx:.1f},{y1:.1f} {mx:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
                   f'marker-end="url(#{uid}-arrow)"/>')
    out.append("</g>")
    kinds = {"base_model": "Base model", "dataset": "Dataset", "job": "Job", "version": "Version",
             "current": "This version"}
    for n in graph.nodes:
        x, y = pos[n.id]
        kind_text = kinds.get(n.kind, n.kind)
        label = f"{kind_text}: {n.label}" + (f" ({n.sublabel})" if n.sublabel else "")
        box = (f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="8"/>'
               f'<text class="node-kind" x="{x + 10}" y="{y + 17}">{escape(kind_text)}</text>'
               f'<text class="node-label" x="{x + 10}" y="{y + 34}">{escape(_truncate(n.label, 20))}</text>'
               f'<text class="node-sub" x="{x + 10}" y="{y + 47}">{escape(_truncate(n.sublabel, 24))}</text>')
        if n.href:
            out.append(f'<a href="{escape(n.href)}" class="node node-{escape(n.kind)}" aria-label="{escape(label)}" '
                       f'data-node="{escape(n.id)}"><title>{escape(label)}</title>{box}</a>')
        else:
            out.append(f'<g class="node node-{escape(n.kind)}" role="img" aria-label="{escape(label)}" '
                       f'data-node="{escape(n.id)}"><title>{escape(label)}</title>{box}</g>')
    out.append("</svg>")
    return Markup("".join(out))
