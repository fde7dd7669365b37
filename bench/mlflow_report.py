#!/usr/bin/env python
"""Markdown tables (and the target checks) from bench/mlflow_compare.py result files.

    .venv/bin/python bench/mlflow_report.py bench/results-sqlite.json bench/results-postgresql.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPS = {"resolve": "resolve by alias", "list_versions": "list versions of a name", "download": "download 1 MiB",
       "register": "register + 1 MiB artifact"}


def _idx(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["target"], r["op"], r["clients"]): r for r in results}


def _f(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _x(a: float, b: float, digits: int = 1, suffix: str = "x") -> str:
    """a / b; a cell where the other side completed nothing in the window says so."""
    if not b or b != b:  # zero or NaN
        return "n/a"
    return f"{a / b:.{digits}f}{suffix}"


def table(res: dict[str, Any]) -> str:
    ix = _idx(res["results"])
    lines = [
        "| operation | clients | ours req/s | p50 ms | p99 ms | MLflow kept-alive req/s | p50 | p99 | "
        "MLflow capacity req/s | p50 | p99 | throughput vs kept-alive | vs capacity | p50 vs capacity | "
        "p99 vs capacity | server CPU ms/req ours / MLflow |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, label in OPS.items():
        for c in sorted({k[2] for k in ix if k[1] == op}):
            o, k, q = ix.get(("ours", op, c)), ix.get(("mlflow-keepalive", op, c)), ix.get(("mlflow-capacity", op, c))
            if not (o and k and q):
                continue
            lines.append(
                f"| {label} | {c} | {_f(o['rps'])} | {_f(o['p50_ms'], 2)} | {_f(o['p99_ms'])} | {_f(k['rps'])} | "
                f"{_f(k['p50_ms'], 2)} | {_f(k['p99_ms'])} | {_f(q['rps'])} | {_f(q['p50_ms'], 2)} | "
                f"{_f(q['p99_ms'])} | **{_x(o['rps'], k['rps'])}** | **{_x(o['rps'], q['rps'])}** | "
                f"{_x(o['p50_ms'], q['p50_ms'], 2, '')} | {_x(o['p99_ms'], q['p99_ms'], 2, '')} | "
                f"{_f(o['cpu_ms_per_req'], 2)} / {_f(q['cpu_ms_per_req'], 2)} |")
    if any("n/a" in line for line in lines):
        lines.append("\nn/a: MLflow completed no request of that cell within its measured window.")
    return "\n".join(lines)


def targets(res: dict[str, Any]) -> str:
    ix = _idx(res["results"])
    out = []

    def get(t: str, op: str, c: int) -> dict[str, Any] | None:
        return ix.get((t, op, c))

    for c in (8, 50):
        o, q = get("ours", "resolve", c), get("mlflow-capacity", "resolve", c)
        if o and q:
            r = o["rps"] / q["rps"]
            out.append(f"- resolve throughput at {c} clients >= 3x MLflow capacity: {r:.1f}x "
                       f"({'met' if r >= 3 else 'MISSED'})")
    o, q = get("ours", "resolve", 50), get("mlflow-capacity", "resolve", 50)
    if o and q:
        r = o["p99_ms"] / q["p99_ms"]
        out.append(f"- resolve p99 at 50 clients <= 1/5 of MLflow capacity: {r:.2f} "
                   f"({'met' if r <= 0.2 else 'MISSED'})")
    o = get("ours", "resolve", 1)
    if o:
        out.append(f"- resolve p50 for one kept-alive client <= 5 ms: {o['p50_ms']:.2f} ms "
                   f"({'met' if o['p50_ms'] <= 5 else 'MISSED'})")
    seq = res.get("mlflow_client_sequential_register_per_s")
    best = max((r["rps"] for r in res["results"] if r["target"] == "ours" and r["op"] == "register"), default=0)
    if seq:
        out.append(f"- registering >= 5x MLflow's sequential rate ({seq:.1f}/s with its own client): ours "
                   f"{best:.1f}/s = {best / seq:.1f}x ({'met' if best / seq >= 5 else 'MISSED'})")
    q1 = get("mlflow-capacity", "register", 1)
    if q1:
        out.append(f"  (vs MLflow's sequential rate through the same raw client with quick ACKs, {q1['rps']:.1f}/s: "
                   f"{best / q1['rps']:.1f}x)")
    scale = _idx(res.get("scale") or [])
    for c in (1, 8, 50):
        # the 1,000-version baseline served side by side with the 100,000 (older result files: the comparison's)
        big, small = scale.get(("ours-100k", "resolve", c)), scale.get(("ours-1k", "resolve", c)) or get(
            "ours", "resolve", c)
        if big and small:
            r = big["p99_ms"] / small["p99_ms"]
            out.append(f"- 100,000 versions: resolve p99 at {c} clients {big['p99_ms']:.1f} ms vs "
                       f"{small['p99_ms']:.1f} ms at 1,000 = {r:.2f}x ({'met' if r <= 1.2 else 'MISSED'}; target 1.2x)")
    for c in (1, 8, 50):
        lst = scale.get(("ours-100k", "list_versions", c))
        if lst:
            verdict = (f"({'met' if lst['p99_ms'] <= 50 else 'MISSED'}; target 50 ms for one request)" if c == 1
                       else "(queueing under load, for information)")
            out.append(f"- 100,000 versions: a task's version page at {c} clients p50 {lst['p50_ms']:.1f} ms, "
                       f"p99 {lst['p99_ms']:.1f} ms {verdict}")
    return "\n".join(out)


def scale_table(res: dict[str, Any]) -> str:
    if not res.get("scale"):
        return ""
    first = _idx(res["results"])
    scale = _idx(res["scale"])
    lines = ["| operation | clients | 1,000 (in the comparison) req/s | p50 ms | p99 ms | 1,000 (side by side) req/s "
             "| p50 ms | p99 ms | 100,000 (side by side) req/s | p50 ms | p99 ms | p99 of each run, 1,000 / 100,000 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (target, op, c), r in scale.items():
        if target != "ours-100k":
            continue
        cells = []
        for s in (first.get(("ours", op, c)), scale.get(("ours-1k", op, c)), r):
            cells.append(f"{_f(s['rps'])} | {_f(s['p50_ms'], 2)} | {_f(s['p99_ms'])}" if s else "– | – | –")
        small = scale.get(("ours-1k", op, c)) or {}
        runs = f"{small.get('p99_ms_per_repeat', '–')} / {r.get('p99_ms_per_repeat', '–')}"
        lines.append(f"| {OPS[op]} | {c} | " + " | ".join(cells) + f" | {runs} |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        res = json.loads(Path(path).read_text())
        print(f"### {res['backend']} backend ({res['versions']} versions over {res['names']} names; "
              f"ours: adapter-registry serve --workers {res['workers']}; {res['duration_s']:.0f} s per cell)\n")
        print(f"Seeding: MLflow {res['seed_s']['mlflow']:.1f} s, ours {res['seed_s']['ours']:.1f} s "
              f"(8 clients). Load average before/after: {res.get('loadavg_before')} / {res.get('loadavg_after')}\n")
        print(table(res))
        print()
        st = scale_table(res)
        if st:
            print(f"Scale (ours, {res.get('scale_insert_s', 0):.0f} s to bulk-insert):\n")
            print(st)
            print()
        print(targets(res))
        print()


if __name__ == "__main__":
    main()
