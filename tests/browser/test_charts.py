"""The SVG chart helpers the pages use (no browser needed; kept beside the page tests)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from registry.web import charts

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML or this raises


def test_line_chart_is_accessible_and_escapes_text() -> None:
    svg = charts.line_chart([charts.Series("loss <train>", [(1, 0.9), (2, 0.5), (3, 0.25)])],
                            title="Loss & more", x_label="step", y_label="loss")
    root = _parse(svg)
    assert root.get("role") == "img"
    t_id, d_id = root.get("aria-labelledby", "").split()
    assert root.find(f"{NS}title").get("id") == t_id and root.find(f"{NS}title").text == "Loss & more"
    assert "3 points" in root.find(f"{NS}desc").text and root.find(f"{NS}desc").get("id") == d_id
    assert len(root.findall(f".//{NS}circle")) == 3
    assert "<train>" not in svg and "&lt;train&gt;" in svg
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "step" in texts and "loss" in texts


def test_empty_line_chart_says_so() -> None:
    root = _parse(charts.line_chart([charts.Series("x", [])], title="t", empty_text="Nothing yet"))
    assert "Nothing yet" in [t.text for t in root.iter(f"{NS}text")]


def test_bar_chart_lists_values_in_its_description() -> None:
    root = _parse(charts.bar_chart([("positive", 24), ("negative", 8)], title="Labels", x_label="rows"))
    assert root.find(f"{NS}desc").text == "positive: 24; negative: 8"
    assert len(root.findall(f".//{NS}rect")) == 2


def test_nice_ticks_cover_the_range() -> None:
    ticks = charts.nice_ticks(0.13, 0.87)
    assert ticks[0] <= 0.13 and ticks[-1] >= 0.87 and len(ticks) <= 8
    assert charts.nice_ticks(5, 5)[0] < 5 < charts.nice_ticks(5, 5)[-1]


def test_lineage_layers_inputs_before_job_before_version() -> None:
    g = charts.Graph()
    for nid, kind in (("b", "base_model"), ("d", "dataset"), ("p0", "version"), ("p1", "version"), ("j", "job"),
                      ("v", "current"), ("c", "version")):
        g.add(charts.Node(nid, nid, kind=kind, href=f"/{nid}"))
    for a, b in (("p0", "p1"), ("b", "j"), ("d", "j"), ("p1", "j"), ("j", "v"), ("v", "c")):
        g.link(a, b)
    layer = charts.layer_nodes(g)
    assert layer["p0"] < layer["p1"] < layer["j"] < layer["v"] < layer["c"]
    assert layer["b"] == layer["d"] == layer["j"] - 1  # sources sit right before the job
    root = _parse(charts.lineage_graph(g, title="Lineage"))
    assert root.get("role") == "group"  # node links stay reachable
    links = root.findall(f".//{NS}a")
    assert len(links) == 7 and all(a.get("aria-label") for a in links)
