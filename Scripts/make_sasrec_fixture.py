#!/usr/bin/env python3
"""Regenerates Tests/Fixtures/sasrec-parity/: a tiny SASRec with fixed random weights, exported
as model `parity` version 1 (without user_states, so the server computes them), and
expected.json with PyTorch's eval-mode float32 scores for a set of input sequences.

    python3 Scripts/make_sasrec_fixture.py      # needs torch; the tests that read it do not

Shape: d=16, 2 heads, 2 blocks, maxlen 8, items i1..i20, users u1..u4. Every parameter is
random (matrices N(0, 0.3^2), LayerNorm weights 1+0.2*N(0,1), all biases 0.1*N(0,1)) so that a
parity test exercises each of them. Seeds are tried from 1 up until, in every case, all 20
scores are at least 2e-3 apart, so the expected order is unambiguous.
"""

import json
import os
import pathlib
import shutil
import sys

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Benchmarks"))
sys.path.insert(0, str(REPO / "Scripts"))
import export_sasrec  # noqa: E402
import sasrec_torch  # noqa: E402

OUT = REPO / "Tests" / "Fixtures" / "sasrec-parity"
DIM, HEADS, BLOCKS, MAXLEN = 16, 2, 2, 8
ITEMS = [f"i{k}" for k in range(1, 21)]
USERS = {
    "u1": ["i3", "i17", "i5"],
    "u2": ["i1", "i2", "i4", "i8", "i16", "i11", "i19", "i6"],                        # exactly maxlen
    "u3": ["i9", "i12", "i20", "i7", "i13", "i2", "i18", "i10", "i14", "i3", "i15", "i1"],  # truncated
    "u4": ["i11"],
}
CASES = [
    ("length-1", ["i7"]),
    ("length-5", ["i2", "i13", "i20", "i5", "i9"]),
    ("exactly-maxlen", ["i4", "i18", "i1", "i16", "i10", "i6", "i12", "i3"]),
    ("longer-than-maxlen", ["i15", "i8", "i19", "i2", "i11", "i7", "i14", "i17", "i5", "i20", "i6"]),
    ("repeated-item", ["i3", "i9", "i3", "i14", "i3", "i9"]),
]
MIN_GAP = 2e-3  # between any two scores of a case (the tests allow 1e-4 of error)


def random_model(seed: int) -> sasrec_torch.SASRec:
    torch.manual_seed(seed)
    model = sasrec_torch.SASRec(len(ITEMS), maxlen=MAXLEN, dim=DIM, blocks=BLOCKS, heads=HEADS, dropout=0.2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.3)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
        model.item_emb.weight[0].zero_()
    return model.eval()


def all_cases():
    cases = [dict(name=f"user-{u}", recent_items=seq, user_id=u) for u, seq in USERS.items()]
    return cases + [dict(name=name, recent_items=seq) for name, seq in CASES]


def main() -> int:
    torch.set_num_threads(1)
    index = {item: i + 1 for i, item in enumerate(ITEMS)}
    cases = all_cases()
    sequences = [np.array([index[x] for x in c["recent_items"]], dtype=np.int64) for c in cases]
    for seed in range(1, 1000):
        model = random_model(seed)
        scores = sasrec_torch.scores(model, sequences)
        gaps = [np.diff(np.sort(s)).min() for s in scores]
        if min(gaps) >= MIN_GAP:
            break
    else:
        raise SystemExit(f"no seed below 1000 separates all scores by {MIN_GAP}")

    # Padding must not matter: the right-aligned, padded window gives the same h as the real
    # items alone, at every real position.
    padded = sasrec_torch.last_hidden(model, sequences)
    for case, seq, h in zip(cases, sequences, padded):
        unpadded = sasrec_torch.last_hidden_unpadded(model, seq)
        assert np.abs(h - unpadded).max() < 1e-6, (case["name"], np.abs(h - unpadded).max())
        with torch.no_grad():
            window = torch.from_numpy(sasrec_torch.window(seq, MAXLEN))[None]
            tail = torch.as_tensor(seq[-MAXLEN:])[None]
            rows = model.hidden(window)[0, MAXLEN - tail.shape[1]:]
            assert (rows - model.hidden(tail)[0]).abs().max().item() < 1e-6, case["name"]

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    export_sasrec.export(
        model.state_dict(),
        {"heads": HEADS, "dropout": 0.2, "source": "pytorch", "seed": seed,
         "generator": "Scripts/make_sasrec_fixture.py"},
        ITEMS, USERS, OUT / "models", "parity",
        training_data={"note": "fixed random weights, no training"})
    assert (OUT / "models" / "parity" / "1").is_dir()

    expected = {"items": ITEMS, "seed": seed, "min_gap": MIN_GAP, "cases": []}
    for case, s in zip(cases, scores):
        order = np.argsort(-s, kind="stable")
        entry = {"name": case["name"], "recent_items": case["recent_items"]}
        if "user_id" in case:
            entry["user_id"] = case["user_id"]
        entry["scores"] = [float(f"{x:.9g}") for x in s.tolist()]
        entry["top"] = [ITEMS[i] for i in order]
        expected["cases"].append(entry)
    # One case a line: small, and diffs stay readable.
    lines = [json.dumps(case, separators=(", ", ": ")) for case in expected.pop("cases")]
    head = json.dumps(expected, separators=(", ", ": "))[:-1]
    (OUT / "expected.json").write_text(head + ', "cases": [\n' + ",\n".join(lines) + "\n]}\n")
    print(f"seed {seed}; smallest score gap {min(gaps):.4g}; wrote {os.path.relpath(OUT, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
