"""Crash safety: a run killed with SIGKILL mid-epoch resumes to the same weights as an uninterrupted run;
a batch that runs out of memory is split, not lost."""

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
import yaml
from conftest import tiny_config_dict
from safetensors.torch import load_file

from mmemo.checkpoint import latest_checkpoint
from mmemo.config import config_from_dict
from mmemo.errors import ModelLoadError

pytestmark = pytest.mark.slow  # trains, kills and resumes training processes


def _train_cmd(config_path, *extra):
    return [sys.executable, "-m", "mmemo", "train", str(config_path), *extra]


def _weights(run_dir):
    return load_file(latest_checkpoint(run_dir / "checkpoints") / "model" / "model.safetensors")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(synth_corpus, tmp_path):
    configs = {}
    for name in ("reference", "killed"):
        cfg = tiny_config_dict(synth_corpus, tmp_path / name, epochs=2, checkpoint_every=3, threads=1, seed=5)
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(cfg))
    subprocess.run(_train_cmd(configs["reference"]), check=True, capture_output=True)

    proc = subprocess.Popen(_train_cmd(configs["killed"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        # kill after the mid-epoch checkpoint at step 12 (epoch 2 of 10 batches), before the run ends
        if pointer.is_file() and int(pointer.read_text().split("-")[1]) >= 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = int(pointer.read_text().split("-")[1])
    assert 12 <= step < 20

    resumed = subprocess.run(_train_cmd(configs["killed"], "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch" in resumed.stdout + resumed.stderr
    reference, again = _weights(tmp_path / "reference"), _weights(tmp_path / "killed")
    assert reference.keys() == again.keys()
    for name in reference:
        assert torch.equal(reference[name], again[name]), name
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # no epoch logged twice


def test_resume_without_checkpoint_is_explained(synth_corpus, tmp_path):
    from mmemo.train import train

    with pytest.raises(ModelLoadError, match="no checkpoint to resume from"):
        train(config_from_dict(tiny_config_dict(synth_corpus, tmp_path / "fresh")), resume=True)


def test_bad_clip_fails_fast_or_is_skipped(synth_corpus, tmp_path):
    import json

    from mmemo.errors import DataError
    from mmemo.train import train

    rows = [json.loads(line) for line in synth_corpus.read_text().splitlines()]
    for row in rows:
        row["audio"] = str(synth_corpus.parent / row["audio"])
    train_rows = [r for r in rows if r["split"] == "train"]
    (tmp_path / "junk.wav").write_bytes(os.urandom(3000))
    train_rows[0]["audio"] = str(tmp_path / "junk.wav")
    train_rows[1]["audio"] = str(tmp_path / "missing.wav")
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"2 row\(s\) with bad audio.*mmemo data check"):
        train(config_from_dict(tiny_config_dict(manifest, tmp_path / "fail", epochs=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = tiny_config_dict(manifest, tmp_path / "skip", epochs=1)
        cfg["data"]["on_bad_sample"] = "skip"
        result = train(config_from_dict(cfg))
    assert result["test"]["both"]["n"] > 0


def test_resume_with_more_epochs_continues_the_schedule(synth_corpus, tmp_path):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from mmemo.config import load_config
    from mmemo.train import train

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(synth_corpus, tmp_path / "run", epochs=2, threads=1)))
    train(load_config(config))  # a finished 2-epoch run: its schedule decayed to LR 0 at its last step

    used = []  # the head's LR at every optimizer step of the resumed run, observed on the real optimizer
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"])
    )
    try:
        train(load_config(config, ["train.epochs=3"]), resume=True)
    finally:
        hook.remove()
    assert len(used) == 10  # epoch 3 only: 160 training rows in batches of 16
    assert min(used) > 0, used
    # the rebuilt 3-epoch schedule (30 steps, 3 warmup) at step 20: 2e-3 * (30 - 20) / 27
    assert used[0] == pytest.approx(2e-3 * 10 / 27)
    assert used == sorted(used, reverse=True)  # still decaying linearly
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 3
    assert yaml.safe_load((run / "config.original.yaml").read_text())["train"]["epochs"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
