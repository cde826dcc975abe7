"""Speed benchmarks behind `mmemo bench`: `predict` (CPU inference latency) and `train` (training throughput).

`mmemo.bench.train` times the trainer's own code (`mmemo.builders`, `mmemo.train.optimizer_step`) against a
plainly written naive loop; the model sizes of both live in `mmemo.bench.sizes`.
"""
