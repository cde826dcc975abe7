"""Run by tests/test_ddp.py under torchrun: two epochs through the library's DDP path, then a full train()."""

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from mmemo.checkpoint import TrainState
from mmemo.config import config_from_dict
from mmemo.data import dataset
from mmemo.train import setup, train, train_epoch

seen = []
_getitem = dataset.EmotionDataset.__getitem__


def _recording_getitem(self, index):
    item = _getitem(self, index)
    if self.train:
        seen.append([self.epoch, item["id"]])
    return item


dataset.EmotionDataset.__getitem__ = _recording_getitem
cfg_dict, out = json.loads(sys.argv[1]), Path(sys.argv[2])
run = setup(config_from_dict(cfg_dict))
state = TrainState()
for epoch in range(2):
    state.epoch, state.batch = epoch, 0
    train_epoch(run, state)
rank = int(os.environ["RANK"])
save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, out / f"rank{rank}.safetensors")
(out / f"seen{rank}.json").write_text(json.dumps(seen))
train(config_from_dict({**cfg_dict, "train": {**cfg_dict["train"], "epochs": 1, "overwrite": True}}))
