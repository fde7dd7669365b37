"""GPU check for the training core: the same code path the worker runs, on CUDA when present.

Builds a random BERT with all-MiniLM-L6-v2's shape (6 layers, 384 hidden, 12 heads) and a
synthetic learnable text task, then for each method: trains on the GPU (loss must fall), checks
the frozen base is bit-identical after training, saves the artifact, reloads it on the CPU and
checks the logits agree with the GPU's, and times training steps on GPU vs CPU.

    python bench/gpu_check.py            # prints a table; exits non-zero if a check fails
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = "good bad fun boring great awful film movie plot actor scene the a is was very not and".split()


def build_base(d: Path, *, layers: int = 6, hidden: int = 384, heads: int = 12, init: float = 0.02) -> str:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    d.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    tok.save_pretrained(d)
    assert tok("good film")["input_ids"][1:3] == [vocab.index("good"), vocab.index("film")], "tokenizer maps to [UNK]"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=512, initializer_range=init)
    BertModel(cfg).save_pretrained(d, safe_serialization=True)
    return hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()


def write_data(d: Path, n: int) -> None:
    rng = random.Random(0)
    for split, rows in (("train", n), ("dev", 256)):
        with open(d / f"{split}.jsonl", "w") as f:
            for _ in range(rows):
                pos = rng.random() < 0.5
                words = [rng.choice(["good", "great", "fun"] if pos else ["bad", "boring", "awful"])]
                words += [rng.choice(WORDS[6:]) for _ in range(rng.randint(2, 6))]
                rng.shuffle(words)
                f.write(json.dumps({"text": " ".join(words), "text_pair": None, "label": "1" if pos else "0",
                                    "response": None}) + "\n")


def main() -> int:
    import torch

    from registry.methods.model import load_adapted_model
    from workers.training import TrainSpec, run_training

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, cuda available: {cuda}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    tmp = Path(tempfile.mkdtemp())
    # Timing on all-MiniLM-L6-v2's shape; learning checked on a small random BERT, since a deep
    # random (untrained) transformer gives adapters nothing to work with.
    big, small = tmp / "minilm-shape", tmp / "small"
    shas = {big: build_base(big), small: build_base(small, layers=4, hidden=64, heads=4, init=0.2)}
    write_data(tmp, 2048)
    failures = 0
    rows = []
    for method, cfg in (("houlsby", {}), ("pfeiffer", {}), ("lora", {}), ("ia3", {}),
                        ("houlsby", {"skip_layers": 3})):
        result = {}
        runs = [(small, "cuda" if cuda else "cpu", 300)] + [(big, d, 40 if d == "cuda" else 10)
                                                            for d in (["cuda"] if cuda else []) + ["cpu"]]
        for base, device, steps in runs:
            sha = shas[base]
            out = tmp / f"out-{method}-{len(rows)}-{device}"
            hp = {"epochs": 3, "batch_size": 16, "max_length": 128, "seed": 0, "max_steps": steps,
                  "learning_rate": 1e-2 if base == small else 3e-3}
            spec = TrainSpec(base_dir=base, base_sha256=sha, base_name="minilm-shape", task_type="single_label",
                             labels=["0", "1"], train_path=tmp / "train.jsonl",
                             dev_path=(tmp / "dev.jsonl") if base == small else None,
                             method=method, method_config=cfg, hyperparameters=hp, out_dir=out, device=device)
            losses: list[float] = []
            stamps: list[tuple[int, float]] = []

            def on_progress(p, losses=losses, stamps=stamps):  # type: ignore[no-untyped-def]
                if p.loss is not None:
                    losses.append(p.loss)
                stamps.append((p.step, time.perf_counter()))  # timing runs have no dev split: no eval

            res = run_training(spec, on_progress=on_progress, should_stop=lambda: False)
            # Steady-state step time between the first and last report (model load and eval excluded).
            (s0, t0), (s1, t1) = stamps[0], stamps[-1]
            step_s = (t1 - t0) / max(1, s1 - s0)
            key = ("learn" if base == small else device)
            result[key] = (res, losses, step_s, out, base, sha)
        dev = "cuda" if cuda else "cpu"
        res, losses, _, out, base, sha = result["learn"]
        learned = (res.metrics.get("accuracy") or 0) >= 0.55  # above chance: the GPU path trains
        base_same = all(hashlib.sha256((b / "model.safetensors").read_bytes()).hexdigest() == h
                        for b, h in shas.items())
        step_s = result[dev][2]
        # Reload the GPU-trained artifact on the CPU and compare logits with the GPU model's.
        agree = True
        if cuda:
            texts = ["good fun film", "awful boring plot", "the actor was very great"]
            _, _, _, out, base, sha = result["cuda"]
            m_gpu = load_adapted_model(base, out, base_sha256=sha, device="cuda")
            m_cpu = load_adapted_model(base, out, base_sha256=sha, device="cpu")
            with torch.no_grad():
                lg = m_gpu(**m_gpu.tokenize(texts)).float().cpu()
                lc = m_cpu(**m_cpu.tokenize(texts)).float()
            agree = torch.allclose(lg, lc, atol=1e-3, rtol=1e-3)
        ok = learned and base_same and agree
        failures += not ok
        cpu_step = result["cpu"][2]
        big_res = result[dev][0]
        rows.append((method + (f" {cfg}" if cfg else ""), dev, f"{big_res.trainable_params / big_res.total_params:.2%}",
                     f"{losses[0]:.3f}->{losses[-1]:.3f}", res.metrics.get("accuracy"), f"{step_s * 1000:.1f}",
                     f"{cpu_step * 1000:.0f}", f"{cpu_step / step_s:.1f}x", ok))
    print("| method | device | trainable (MiniLM shape) | loss (small base) | dev acc (small base) | "
          "step ms (device) | step ms (cpu) | speed-up | checks ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
