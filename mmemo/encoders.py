"""The Hugging Face tower wrappers: a BERT-family text encoder, a wav2vec2-family audio encoder on waveforms and
a Whisper-family audio encoder on log-mel features, plus the builders that load or rebuild their models.

The wrappers own their internals, so the training loop, export and reports never reach into a Hugging Face
model: every wrapper answers `hf_config`, `num_layers`, `layer_of(name)`, `gradient_checkpointing(on)`,
`disable_masking()` and `convolutions_as_linear()` (the `EncoderWrapper` base), besides `lock` (freezing) and
`forward`, which returns states (B, T, D_tower) and their mask (B, T).
"""

from __future__ import annotations

import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.config import ModelConfig
from mmemo.errors import ConfigError, ModelLoadError

# Parameter-name parts of a tower's layers below its transformer layers (embeddings, CNN front ends, positions).
_BELOW_LAYERS = (
    "embeddings",
    "feature_extractor",
    "feature_projection",
    "masked_spec_embed",
    "pos_conv_embed",
    "conv1.",
    "conv2.",
    "embed_positions",
)


class EncoderWrapper(nn.Module):
    """What every tower wrapper shares: the wrapped Hugging Face model and the questions asked about it.

    A subclass names its transformer layers (`blocks`) and adds `lock` and `forward`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def blocks(self) -> nn.ModuleList:
        """The wrapped model's transformer layers, bottom first."""
        raise NotImplementedError

    @property
    def hf_config(self):
        """The Hugging Face config of the wrapped model (saved with a checkpoint, shown in reports)."""
        return self.model.config

    @property
    def num_layers(self) -> int:
        """The number of transformer layers."""
        return len(self.blocks)

    def layer_of(self, name: str) -> int | None:
        """Layer depth of parameter `name` (as in this wrapper's `named_parameters`), for layer-wise LR decay.

        Returns:
            0 for the embeddings or CNN front end and positions, i + 1 for transformer layer i, `num_layers`
            above them (final norms); None for a parameter of the wrapper itself, such as the layer-mixing
            weights (trained like the head).
        """
        if not name.startswith("model."):
            return None
        # BERT and wav2vec2 name layers encoder.layer(s).i, Whisper's encoder layers.i
        match = re.search(r"\.(?:encoder\.)?layers?\.(\d+)\.", name)
        if match:
            return int(match.group(1)) + 1
        return 0 if any(part in name for part in _BELOW_LAYERS) else self.num_layers

    def gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute layer activations in the backward pass instead of keeping them (less memory, more time)."""
        if on:
            self.model.gradient_checkpointing_enable()
        else:
            self.model.gradient_checkpointing_disable()

    def disable_masking(self) -> None:
        """Turn off training-time input masking (the towers here have none unless they override this)."""

    def convolutions_as_linear(self) -> None:
        """Run convolutions as linear layers over their input windows (`WindowLinear`) before int8 quantisation,
        which reaches `nn.Linear` only; the towers here keep theirs unless they override this."""

    def pooled(self, inputs: torch.Tensor, attention_mask: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
        """Each of hidden states `layers` (0: the input embeddings) mean-pooled over a clip's frames: (B, len, D).

        For the audio towers, whose `hidden_states` gives every layer's frame states and their mask.
        """
        hidden, mask = self.hidden_states(inputs, attention_mask)  # (L+1, B, T, D), (B, T)
        weights = mask.to(hidden.dtype)[None, :, :, None]  # (1, B, T, 1)
        chosen = hidden[list(layers)]  # (len, B, T, D)
        means = (chosen * weights).sum(2) / weights.sum(2).clamp(min=1.0)  # (len, B, D)
        return means.transpose(0, 1)  # (B, len, D)

    def mixed(self, inputs: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The softmax(`layer_weights`)-weighted sum of all hidden states (B, T, D) and the frame mask (B, T)."""
        hidden, mask = self.hidden_states(inputs, attention_mask)  # (L+1, B, T, D)
        weights = torch.softmax(self.layer_weights, dim=0).to(hidden.dtype)
        return torch.einsum("l,lbtd->btd", weights, hidden), mask


class TextEncoder(EncoderWrapper):
    """A Hugging Face BERT-family model returning token states and their mask."""

    def __init__(self, model: nn.Module, freeze_layers: int = 0):
        super().__init__(model)
        self.dim = model.config.hidden_size
        self.lock(freeze_layers)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def lock(self, layers: int) -> None:
        """Freeze the embeddings and the lower `layers` transformer layers; -1 freezes the whole encoder."""
        if layers == 0:
            return
        blocks = self.blocks
        frozen = [self.model.embeddings, *blocks] if layers < 0 else [self.model.embeddings, *blocks[:layers]]
        for module in frozen:
            module.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T_text, D_text)
        return states, attention_mask.bool()


class AudioEncoder(EncoderWrapper):
    """A Hugging Face wav2vec2-family model; returns a learned weighted sum of all hidden layers and frame mask."""

    input_name = "input_values"

    def __init__(self, model: nn.Module, freeze_feature_encoder: bool = True, freeze_layers: int = 0):
        super().__init__(model)
        self.dim = model.config.hidden_size
        # Base-style checkpoints (group norm) were trained without a mask and must not get one (HF docs).
        self.pass_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"
        self.layer_weights = nn.Parameter(torch.zeros(model.config.num_hidden_layers + 1))
        self.lock(freeze_feature_encoder, freeze_layers)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def lock(self, feature_encoder: bool, layers: int) -> None:
        """Freeze the CNN feature encoder and/or the lower `layers` transformer layers (-1: everything)."""
        if feature_encoder or layers != 0:
            self.model.freeze_feature_encoder()
        if layers == 0:
            return
        blocks = self.blocks
        frozen = (
            [self.model.feature_projection, *blocks]
            if layers < 0
            else [self.model.feature_projection, *blocks[:layers]]
        )
        for module in frozen:
            module.requires_grad_(False)
        if layers < 0:
            self.model.requires_grad_(False)

    def disable_masking(self) -> None:
        """Turn SpecAugment off: its masks are drawn with NumPy on the host, which breaks a torch.compile graph."""
        self.model.config.mask_time_prob = 0.0
        self.model.config.mask_feature_prob = 0.0

    def hidden_states(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's frame states, input embeddings first: (L+1, B, T_audio, D_audio), and the frame mask."""
        out = self.model(
            input_values, attention_mask=attention_mask if self.pass_mask else None, output_hidden_states=True
        )
        hidden = torch.stack(out.hidden_states)  # (L+1, B, T_audio, D_audio)
        lengths = self.model._get_feat_extract_output_lengths(attention_mask.sum(-1))
        mask = torch.arange(hidden.shape[2], device=hidden.device)[None, :] < lengths[:, None]  # (B, T_audio)
        return hidden, mask

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixed(input_values, attention_mask)


class WhisperAudioEncoder(EncoderWrapper):
    """A Whisper-family encoder on log-mel features (B, n_mels, frames); same outputs as `AudioEncoder`.

    Hugging Face's `WhisperEncoder.forward` accepts only 30 s inputs (3000 frames) and ignores masks. This wrapper
    runs the encoder's own modules on the clip's frames instead: conv front end, the first T rows of the fixed
    30 s positional table, the layers with padded frames masked as keys, the final norm. A pretrained encoder
    therefore sees the positions it was trained on for the first T × 20 ms; clips longer than the table (30 s for
    pretrained encoders, `max_source_positions` × 20 ms for one built from a config) are cut to it with a
    warning. Whisper was trained on zero-padded 30 s windows without masks, so short clips without the padding
    are a (widely used) approximation for pretrained checkpoints. It has no built-in SpecAugment
    (`data.augment.spec_mask` masks its input), so `disable_masking` has nothing to turn off.
    """

    input_name = "input_features"

    def __init__(self, model: nn.Module, freeze_feature_encoder: bool = True, freeze_layers: int = 0):
        super().__init__(model)
        self.dim = model.config.d_model
        self.layer_weights = nn.Parameter(torch.zeros(len(model.layers) + 1))
        self.lock(freeze_feature_encoder, freeze_layers)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def lock(self, feature_encoder: bool, layers: int) -> None:
        """Freeze the two-convolution front end and/or the lower `layers` transformer layers (-1: everything)."""
        if feature_encoder or layers != 0:
            for module in (self.model.conv1, self.model.conv2):
                module.requires_grad_(False)
        if layers == 0:
            return
        blocks = self.blocks
        for module in [self.model.embed_positions, *(blocks if layers < 0 else blocks[:layers])]:
            module.requires_grad_(False)
        if layers < 0:
            self.model.requires_grad_(False)

    def hidden_states(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's frame states, input embeddings first (the last after the final norm, which a pruned tower
        does not have: `prune_whisper_encoder`): (L+1, B, T, D), and the frame mask (B, T)."""
        encoder = self.model
        x = F.gelu(encoder.conv1(input_features.to(encoder.embed_positions.weight.dtype)))  # (B, D, frames)
        # Zero the first convolution's output past each clip's frames, as its zero padding is for a clip alone:
        # then no state of a clip depends on what it is batched with.
        x = x * attention_mask[:, None, : x.shape[-1]].to(x.dtype)
        x = F.gelu(encoder.conv2(x)).transpose(1, 2)  # (B, T_audio, D), stride 2: 20 ms per position
        length = x.shape[1]
        if length > encoder.embed_positions.num_embeddings:  # one long clip must not stop an evaluation
            length = encoder.embed_positions.num_embeddings
            warnings.warn(
                f"audio longer than this Whisper encoder's {length * 0.02:.0f} s positional table: only its first "
                f"{length * 0.02:.0f} s are used; crop clips (data.max_audio_seconds) or predict() long audio, "
                "which splits it into windows"
            )
            x, attention_mask = x[:, :length], attention_mask[:, : 2 * length]
        x = x + encoder.embed_positions.weight[:length]
        x = F.dropout(x, p=encoder.dropout, training=self.training)
        lengths = (attention_mask.sum(-1) + 1) // 2  # conv2 (kernel 3, stride 2, padding 1) halves the frames
        mask = torch.arange(length, device=x.device)[None, :] < lengths[:, None]  # (B, T_audio)
        # Padded frames are masked as keys: additive (B, 1, 1, T_audio) mask of 0 and the dtype's minimum.
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, torch.finfo(x.dtype).min)
        bias = bias[:, None, None, :]
        hidden = [x]
        for layer in encoder.layers:
            x = layer(x, bias)
            hidden.append(x)
        hidden[-1] = encoder.layer_norm(x)
        return torch.stack(hidden), mask  # (L+1, B, T_audio, D)

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixed(input_features, attention_mask)

    def convolutions_as_linear(self) -> None:
        """The two front-end convolutions as `WindowLinear`s, so that int8 covers them: on a 5 s clip they do a
        third of a layer's multiplications, and in fp32 they took a sixth of a 2-layer tower's int8 predict
        (docs/compression.md). Converted convolutions stay as they are."""
        for name in ("conv1", "conv2"):
            conv = getattr(self.model, name)
            if isinstance(conv, nn.Conv1d):
                setattr(self.model, name, WindowLinear(conv))


class WindowLinear(nn.Module):
    """A `nn.Conv1d` (no groups or dilation) computed as one `nn.Linear` over its input windows: the same outputs
    (B, C_out, T_out), from a layer that int8 quantisation (PyTorch's, and onnxruntime's MatMul) reaches.

    The windows are the kernel's k strided slices of the padded input side by side, each from its own offset to
    its own fixed distance before the end, so they have T_out frames each and the ONNX graph needs no shapes.

    Raises:
        ValueError: `conv` has groups, dilation, string padding or a padding mode other than zeros.
    """

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        plain = conv.groups == 1 and conv.dilation == (1,) and conv.padding_mode == "zeros"
        if not plain or not isinstance(conv.padding, tuple):
            raise ValueError(f"WindowLinear takes a plain Conv1d (no groups or dilation, zero padding), got {conv}")
        (self.kernel,), (self.stride,), (self.padding,) = conv.kernel_size, conv.stride, conv.padding
        self.linear = nn.Linear(conv.in_channels * self.kernel, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():  # (C_out, C_in, k) -> (C_out, k·C_in): offset-major, as the windows are laid out
            self.linear.weight.copy_(conv.weight.transpose(1, 2).reshape(conv.out_channels, -1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.padding, self.padding)).transpose(1, 2)  # (B, T_pad, C_in)
        last = self.kernel - 1
        windows = torch.cat([x[:, i : (i - last) or None : self.stride] for i in range(self.kernel)], dim=2)
        return self.linear(windows).transpose(1, 2)  # (B, T_out, k·C_in) -> (B, C_out, T_out)


def build_encoders(cfg: ModelConfig, vocab_size: int | None = None) -> tuple[nn.Module, nn.Module]:
    """The two Hugging Face towers: from checkpoints (hub id or folder) or, when none is named, from configs.

    Args:
        cfg: the model config; `text_config` holds BertConfig fields, `audio_config` Wav2Vec2Config fields or,
            with `model_type: whisper`, WhisperConfig fields (SDPA attention unless they set
            `attn_implementation`, as `mmemo bench train`'s naive baseline does).
        vocab_size: the tokenizer's vocabulary size for a text encoder built from a config.
    """
    from transformers import AutoConfig, AutoModel, BertConfig, Wav2Vec2Config

    remote = {"trust_remote_code": cfg.trust_remote_code}
    audio_config = AutoConfig.from_pretrained(cfg.audio_encoder, **remote) if cfg.audio_encoder else None
    check_audio_layers(cfg, audio_config)  # before any weights are read
    if cfg.text_encoder:
        text_model = AutoModel.from_pretrained(
            cfg.text_encoder, attn_implementation="sdpa", add_pooling_layer=False, **remote
        )
    else:
        config = BertConfig(**{"vocab_size": vocab_size, "attn_implementation": "sdpa", **cfg.text_config})
        text_model = AutoModel.from_config(config, add_pooling_layer=False)
    if audio_config is not None and is_whisper(audio_config):
        audio_model = _pretrained_whisper_encoder(cfg.audio_encoder, cfg.audio_layers)
    elif cfg.audio_encoder:
        audio_model = AutoModel.from_pretrained(cfg.audio_encoder, attn_implementation="sdpa", **remote)
    elif cfg.audio_config.get("model_type", "wav2vec2") == "whisper":
        audio_model = _whisper_encoder({**cfg.audio_config, "attn_implementation": "sdpa"})
    else:
        audio_model = AutoModel.from_config(Wav2Vec2Config(**{"attn_implementation": "sdpa", **cfg.audio_config}))
    return text_model, audio_model


def _pretrained_whisper_encoder(name: str, layers: int = 0) -> nn.Module:
    """The encoder of a Whisper checkpoint (full or encoder-only), loaded quietly and pruned to its first `layers`
    layers (0: all, see `prune_whisper_encoder`); one line says what was loaded.

    Raises:
        ModelLoadError: the checkpoint lacks some of the encoder's weights (they are named).
    """
    import sys

    from transformers import WhisperForAudioClassification
    from transformers.utils import logging

    # This class loads "model.encoder.*" weights of a full checkpoint and leaves the decoder out; transformers
    # would list every decoder weight as unexpected and its own classifier head as missing: neither matters here.
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        model, info = WhisperForAudioClassification.from_pretrained(
            name, attn_implementation="sdpa", output_loading_info=True
        )
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    missing = sorted(key for key in info["missing_keys"] if key.startswith("encoder."))
    if missing:
        raise ModelLoadError(
            f"{name}: the Whisper checkpoint has no weights for {len(missing)} encoder parameter(s), e.g. "
            f"{', '.join(missing[:3])}; it is not a Whisper checkpoint this transformers version reads"
        )
    depth = model.config.encoder_layers
    encoder = prune_whisper_encoder(model.encoder, layers)
    config = encoder.config
    parameters = sum(p.numel() for p in encoder.parameters()) / 1e6
    kept = f"the first {config.encoder_layers} of {depth}" if config.encoder_layers < depth else depth
    print(
        f"audio tower: the Whisper encoder of {name} ({kept} layers, {config.d_model} wide, "
        f"{config.num_mel_bins} mel bins, {parameters:.1f} M parameters)",
        file=sys.stderr,
    )
    return encoder


def check_audio_layers(cfg: ModelConfig, config) -> None:
    """Check `model.audio_layers` (and what must fit inside the kept layers) against the pretrained tower's config.

    Raises:
        ConfigError: no pretrained tower, a tower that is not Whisper-family, more layers than it
            has, or `pooled_layers` / `freeze_audio_layers` beyond the kept layers.
    """
    keep = cfg.audio_layers
    if not keep:
        return
    if config is None:
        raise ConfigError(
            f"model.audio_layers={keep} prunes a pretrained tower (model.audio_encoder), and there is none; a tower "
            "built from model.audio_config has the layers its config gives (encoder_layers)"
        )
    if not is_whisper(config):
        raise ConfigError(
            f"model.audio_layers={keep}: pruning keeps the first layers of a Whisper-family tower, and "
            f"{cfg.audio_encoder} is a {config.model_type} model; set model.audio_layers=0"
        )
    depth = config.encoder_layers
    if keep > depth:
        raise ConfigError(
            f"model.audio_layers={keep}: {cfg.audio_encoder} has {depth} encoder layers; give 1 to {depth} "
            "(0 keeps them all)"
        )
    reach = max(cfg.pooled_layers, default=0) if cfg.audio_head == "pooled" else 0
    if reach > keep:
        raise ConfigError(
            f"model.pooled_layers={list(cfg.pooled_layers)} reads hidden state {reach}, but model.audio_layers={keep} "
            f"keeps hidden states 0 to {keep}; choose pooled_layers from 0 to {keep}, or model.audio_layers from "
            f"{reach} to {depth}"
        )
    if cfg.freeze_audio_layers > keep:
        raise ConfigError(
            f"model.freeze_audio_layers={cfg.freeze_audio_layers} freezes more layers than model.audio_layers={keep} "
            f"keeps; give 0 to {keep}, or -1 to freeze the whole tower"
        )


def prune_whisper_encoder(encoder: nn.Module, layers: int) -> nn.Module:
    """Keep a Whisper encoder's first `layers` layers (0, or its depth or more: all of them, unchanged).

    The final layer norm goes with the layers above: it belongs to the output of the last original layer, so a
    pruned tower's hidden state i is the unpruned tower's hidden state i for every i it keeps (`pooled_layers`
    mean the same layers pruned or not). The config says so (`encoder_layers`, and `pruned_from`: the depth it was
    cut from), so a saved model rebuilds the same encoder from its config alone (`_whisper_encoder`).
    """
    depth = len(encoder.layers)
    if not layers or layers >= depth:
        return encoder
    encoder.layers = encoder.layers[:layers]
    encoder.config.encoder_layers = layers
    encoder.config.pruned_from = depth
    encoder.layer_norm = nn.Identity()
    return encoder


def is_whisper(config) -> bool:
    """Whether a Hugging Face config (object or dict) describes a Whisper-family model."""
    kind = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return kind == "whisper"


def _whisper_encoder(config: dict) -> nn.Module:
    """A randomly initialised Whisper encoder (no decoder) from WhisperConfig fields."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = {key: value for key, value in config.items() if key != "model_type"}
    encoder = WhisperEncoder(WhisperConfig(**config))
    if config.get("pruned_from"):  # a pruned tower has no final layer norm (`prune_whisper_encoder`)
        encoder.layer_norm = nn.Identity()
    return encoder


def encoders_from_configs(text_config: dict, audio_config: dict) -> tuple[nn.Module, nn.Module]:
    """Rebuild both towers (random weights) from full saved Hugging Face config dicts; no network."""
    from transformers import AutoConfig, AutoModel

    def build(config: dict, **kwargs) -> nn.Module:
        config = dict(config)
        return AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config), **kwargs)

    audio = _whisper_encoder(audio_config) if is_whisper(audio_config) else build(audio_config)
    return build(text_config, add_pooling_layer=False), audio
