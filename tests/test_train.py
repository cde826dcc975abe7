"""The training recipe's steps: the loss step, optimizer steps and accumulation, out-of-memory splitting."""

import math
import warnings

import pytest
import torch
from conftest import tiny_config_dict

from mmemo.config import config_from_dict


@pytest.mark.slow
def test_gradient_checkpointing_trains(synth_corpus, tmp_path):
    from conftest import tiny_config_dict

    from mmemo.checkpoint import TrainState
    from mmemo.config import config_from_dict
    from mmemo.train import optimizer_step, setup

    cfg = tiny_config_dict(synth_corpus, tmp_path / "gc", gradient_checkpointing=True, grad_accum=2)
    run = setup(config_from_dict(cfg))
    assert run.model.text_encoder.model.is_gradient_checkpointing
    assert run.model.audio_encoder.model.is_gradient_checkpointing
    run.model.train()
    batch = next(iter(run.loaders["train"]))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    assert optimizer_step(run, batch, 0.0, TrainState()) is not None
    assert any(not torch.equal(before[k], v) for k, v in run.model.state_dict().items())


def test_all_subsets_loss_is_the_weighted_mean_over_views(synth_corpus, tmp_path):
    from conftest import tiny_config_dict

    from mmemo.config import config_from_dict
    from mmemo.data.dataset import move_batch
    from mmemo.model import cross_entropy
    from mmemo.train import loss_step, setup

    cfg = tiny_config_dict(synth_corpus, tmp_path / "views")
    cfg["train"]["modality_dropout"] = {"name": "all_subsets", "w_both": 2.0, "w_text": 1.0, "w_audio": 0.5}
    run = setup(config_from_dict(cfg))
    run.model.eval()  # no dropout: the views can be recomputed one by one
    batch = next(iter(run.loaders["train"]))
    with torch.no_grad():
        loss = loss_step(run, batch, 0.0)
        moved = move_batch(batch, run.device)
        nothing = torch.zeros_like(moved["text_present"])
        masks = [
            (moved["text_present"], moved["audio_present"]),
            (moved["text_present"], nothing),
            (nothing, moved["audio_present"]),
        ]
        single = [
            cross_entropy(run.model(moved["text"], moved["audio"], t, a)["logits"], moved["labels"]) for t, a in masks
        ]
    assert loss.item() == pytest.approx((2.0 * single[0] + single[1] + 0.5 * single[2]).item() / 3.5, rel=1e-5)


@pytest.mark.slow
def test_out_of_memory_batch_is_split_and_retried(synth_corpus, tmp_path):
    from mmemo.checkpoint import TrainState
    from mmemo.train import optimizer_step, setup

    run = setup(config_from_dict(tiny_config_dict(synth_corpus, tmp_path / "oom", threads=1)))
    batch = next(iter(run.loaders["train"]))
    forward, attempts, trained = run.model.forward, [], []

    def small_batches_only(text=None, audio=None, *args, **kwargs):  # a "GPU" that holds at most 5 samples
        size = (text or audio)["attention_mask"].shape[0]
        attempts.append(size)
        if size > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        trained.append(size)
        return forward(text, audio, *args, **kwargs)

    run.model.forward = small_batches_only
    state = TrainState()
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = optimizer_step(run, batch, progress=0.0, state=state)
    assert loss is not None and torch.isfinite(torch.tensor(loss))
    assert attempts[0] == len(batch["ids"]) and max(trained) <= 5
    assert sum(trained) == len(batch["ids"])  # every sample trained once, none lost
    assert state.skipped == 0
    assert any("out of memory" in str(w.message) for w in caught)
    assert any(not torch.equal(before[k], v) for k, v in run.model.state_dict().items())

    def always_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    run.model.forward = always_oom
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert optimizer_step(run, batch, progress=0.0, state=state) is None
    assert state.skipped == len(batch["ids"])  # single samples that still do not fit are skipped and counted


@pytest.mark.slow
def test_state_step_counts_optimizer_steps_and_checkpoints_follow_them(synth_corpus, tmp_path):
    """With grad_accum 2 a step is two batches: `checkpoint_every: 2` checkpoints every fourth batch; with
    `train.checkpoints` off nothing is written."""
    from mmemo.checkpoint import TrainState, latest_checkpoint, save_state
    from mmemo.train import setup, train_epoch

    cfg = tiny_config_dict(synth_corpus, tmp_path / "accum", epochs=1, grad_accum=2, checkpoint_every=2, threads=1)
    run = setup(config_from_dict(cfg))
    batches = len(run.loaders["train"])
    state = TrainState()
    train_epoch(run, state)
    assert state.batches_seen == state.batch == batches
    assert state.step == math.ceil(batches / 2)  # the last, partial accumulation also steps
    assert run.scheduler.last_epoch == state.step  # the schedule counts the same steps
    last_mid_epoch = 2 * ((math.ceil(batches / 2) - 1) // 2)  # mid-epoch checkpoints only, every 2 steps
    assert latest_checkpoint(run.out_dir / "checkpoints").name == f"step-{last_mid_epoch:07d}"
    save_state(run, state)  # the epoch end's
    assert latest_checkpoint(run.out_dir / "checkpoints").name == f"step-{state.step:07d}"
    run.cfg.train.checkpoints = False  # as in `mmemo cv`'s runs and a refit: no training state is written
    state.step += 1
    save_state(run, state)
    assert latest_checkpoint(run.out_dir / "checkpoints").name == f"step-{state.step - 1:07d}"


def test_resolve_device_names_the_setting_and_checks_cuda():
    from mmemo.device import resolve_device
    from mmemo.errors import ConfigError

    assert resolve_device("auto", int8=True) == torch.device("cpu")  # int8 layers run on the CPU only
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu"), setting="--device") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu9' in train.device"):
        resolve_device("tpu9")
    with pytest.raises(ConfigError, match="unknown device 'tpu9' in --device"):
        resolve_device("tpu9", setting="--device")
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match="train.device=cuda:0 but this computer has no CUDA GPU.*train.device=cpu"
        ):
            resolve_device("cuda", local_rank=0)  # torchrun's rule picks cuda:LOCAL_RANK, which is not there
    else:
        with pytest.raises(ConfigError, match="numbered from 0"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
