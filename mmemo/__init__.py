"""mmemo: multimodal (text + speech) emotion recognition with one checkpoint for text, audio or both."""

from mmemo.config import Config, load_config
from mmemo.errors import MmemoError
from mmemo.inference import EmotionRecognizer, Prediction

__all__ = ["Config", "EmotionRecognizer", "MmemoError", "Prediction", "load_config"]
__version__ = "0.1.0"
