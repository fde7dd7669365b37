"""The layering rules, checked: the API never loads torch, registry never imports workers, the
training core imports no web/DB/queue framework, and nothing unpickles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_api_server_import_path_has_no_torch(tmp_path: Path) -> None:
    code = ("import sys, registry.api.app, registry.cli, registry.client, registry.methods; "
            "app = registry.api.app.create_app(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'workers')); "
            "print(bad); raise SystemExit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"REGISTRY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_registry_never_imports_workers() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "registry").rglob("*.py")
                 if any(m == "workers" or m.startswith("workers.") for m in _imports(p))]
    assert offenders == []


def test_training_core_is_pure_torch() -> None:
    banned = ("fastapi", "sqlalchemy", "celery", "starlette", "registry.db", "registry.models")
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith(banned))
                 for p in (ROOT / "workers" / "training").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_one_worker_module_ties_db_and_training() -> None:
    tying = []
    for p in (ROOT / "workers").glob("*.py"):
        mods = _imports(p)
        if any(m.startswith("workers.training") for m in mods) and any(
            m.startswith(("registry.db", "sqlalchemy")) for m in mods
        ):
            tying.append(p.name)
    assert tying == ["execute.py"]


def test_nothing_unpickles() -> None:
    offenders = []
    for p in [*(ROOT / "registry").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = f"{owner.id}.{node.func.attr}" if isinstance(owner, ast.Name) else node.func.attr
                if name in ("torch.load", "pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                    offenders.append(f"{p.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == []
