"""Print what the GPU check needs and what is installed; exit 1 when a required package is missing.

Run from the repository root with PYTHONPATH=. (nothing is installed: the GPU machine has no registry access).
"""

from __future__ import annotations

import importlib
import sys

REQUIRED = [
    "torch",
    "torchaudio",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "scipy",
    "soundfile",
    "yaml",
    "tqdm",
]
OPTIONAL = ["librosa", "sklearn", "matplotlib", "onnx", "onnxruntime"]  # not used by `mmemo bench train`


def main() -> int:
    missing = []
    for name in REQUIRED + OPTIONAL:
        try:
            module = importlib.import_module(name)
            print(f"  {name:<13} {getattr(module, '__version__', '?')}")
        except Exception as e:  # a broken install raises more than ImportError (e.g. an extension that fails to load)
            print(f"  {name:<13} MISSING ({type(e).__name__}: {e})")
            if name in REQUIRED:
                missing.append(name)
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i}        {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
    else:
        print("  cuda          not available")
    try:
        import mmemo.bench.train  # noqa: F401  (everything `bench train` imports at module level)
    except Exception as e:
        print(f"  mmemo         cannot import mmemo.bench.train: {type(e).__name__}: {e} (run with PYTHONPATH=.)")
        missing.append("mmemo")
    if missing:
        print(f"missing: {', '.join(missing)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
