"""mmemo: multimodal (text + speech) emotion recognition with one checkpoint for text, audio or both."""

from mmemo.config import Config, load_config
from mmemo.errors import MmemoError

__all__ = ["Config", "EmotionRecognizer", "MmemoError", "Prediction", "Segment", "load_config"]
__version__ = "0.1.0"


def __getattr__(name):
    # Imported on first use, so `mmemo.onnx_runtime` (and the CLI's start-up) does not load torch.
    if name in ("EmotionRecognizer", "Prediction", "Segment"):
        from mmemo import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'mmemo' has no attribute {name!r}")
