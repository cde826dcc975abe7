"""mmemo: multimodal (text + speech) emotion recognition with one checkpoint for text, audio or both."""

from mmemo.config import Config, load_config
from mmemo.errors import MmemoError
from mmemo.prediction import Prediction, Segment

__all__ = ["Config", "EmotionRecognizer", "MmemoError", "Prediction", "Segment", "load_config"]
__version__ = "0.1.0"


def __getattr__(name):
    # Imported on first use, so `mmemo.onnx_runtime` (and the CLI's start-up) does not load torch.
    if name == "EmotionRecognizer":
        from mmemo.inference import EmotionRecognizer

        return EmotionRecognizer
    raise AttributeError(f"module 'mmemo' has no attribute {name!r}")
