"""Two CPU processes under torchrun (gloo): ranks see disjoint data and end with identical weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config_dict
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # starts torchrun processes


def test_two_process_ddp_on_cpu(synth_corpus, tmp_path):
    cfg = tiny_config_dict(synth_corpus, tmp_path / "run", threads=1, epochs=2)
    cfg["train"]["device"] = "cpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).with_name("ddp_worker.py")),
            json.dumps(cfg),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    seen = [json.loads((tmp_path / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] and seen[1]
    for epoch in range(2):
        a, b = ({i for e, i in seen[r] if e == epoch} for r in (0, 1))
        assert a and b and not a & b, "ranks trained on the same clips in one epoch"
    # the full train() under torchrun: only rank 0 writes the run folder, and it is complete
    for name in ("model/model.safetensors", "report.md", "metrics.jsonl", "checkpoints/latest"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
