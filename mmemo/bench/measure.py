"""What the benchmarks measure besides the clock: model FLOPs (`flop_formulas`, FlopCounterMode's table with two
fixes), a practical peak FLOP/s (`measure_peak_tflops`), the process's peak resident memory (`PeakRSS`), the
machine's load average, and a device sync before a clock stops (`synchronize`).
"""

from __future__ import annotations

import os
import resource
import threading
import time

import torch


def measure_peak_tflops(device: torch.device) -> float:
    """The achieved TFLOP/s of a large square matmul: bf16 on CUDA, fp32 on CPU (a practical peak)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    n, repeats = (8192, 20) if cuda else (2048, 3)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16 if cuda else torch.float32)
    b = torch.randn_like(a)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def flop_formulas() -> dict:
    """FlopCounterMode's `custom_mapping` for a step's FLOPs, with two fixes to its table (torch 2.11): it lacks
    the CPU flash-attention kernels (same arithmetic as the CUDA ones), and its convolution-backward formula
    ignores `groups` for the weight gradient, counting wav2vec2's grouped positional convolution (768 channels,
    16 groups, kernel 128) 16× over: +42 GFLOP on a 6 s clip at base size."""
    from math import prod

    from torch.utils.flop_counter import conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    def conv_backward(
        grad_out_shape,
        x_shape,
        w_shape,
        _bias,
        _stride,
        _padding,
        _dilation,
        transposed,
        _output_padding,
        _groups,
        output_mask,
        out_shape=None,
        **kwargs,
    ) -> int:
        flops = 0
        if output_mask[0]:  # grad_input: a transposed convolution of grad_out with the weight (groups-aware)
            flops += conv_flop_count(grad_out_shape, w_shape, x_shape, not transposed)
        if output_mask[1]:  # grad_weight: one multiply-add per weight element per position, as the forward
            positions = prod((x_shape if transposed else grad_out_shape)[2:])
            flops += 2 * x_shape[0] * positions * prod(w_shape)
        return flops

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: sdpa,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward,
        aten.convolution_backward: conv_backward,
    }


def load_average() -> float | None:
    """The 1-minute load average (other work on the machine slows both recipes, not always equally)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU, whose work is done when the call returns."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakRSS:
    """The process's peak resident memory while the block runs, sampled from /proc every 20 ms (Linux);
    elsewhere the process-wide high-water mark (which includes what ran before)."""

    def __enter__(self):
        self.peak = self._current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._current())

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._current())

    @staticmethod
    def _current() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
