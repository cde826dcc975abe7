"""The emotion model: a BERT-family text tower and an audio tower (wav2vec2-family on waveforms, or
Whisper-family on log-mel features) joined by cross-attention.

What flows where:

    input_ids (B, T_text) ──► TextEncoder ──► (B, T_text, D_text) ──► Linear ──► (B, T_text, D)
    input_values (B, S) ───► AudioEncoder ─► (B, T_audio, D_audio) ─► Linear ──► (B, T_audio, D)
    or input_features (B, n_mels, frames) ──► WhisperAudioEncoder ──► (B, T_audio, D_audio) ──► Linear
                             (softmax-weighted sum of all hidden layers)
    functionals (B, F) ────► z-score (a speaker's profile, else the training statistics) ► MLP ► (B, 1, D),
                             the acoustic-statistics token, prepended to the audio stream (optional)
    a missing modality ────► one learned placeholder token (B, 1, D), and for a sample that lacks it inside a
                             batch its first position becomes the placeholder and the rest are masked out
    + modality-presence embedding (both / text only / audio only) on every token of both streams
    CrossAttentionFusion: L × [text attends to audio, audio attends to text, feed-forward], key padding masks
                          → pooling of each stream (attentive, mean or first token) → (B, 2D)
    (or ConcatFusion: each stream pooled on its own → (B, 2D), the late-fusion baseline)
    [+ the audio stream's first position, the acoustic token, read out directly → (B, 3D)]
    classifier ──► logits (B, C)

A text-only prediction therefore never depends on audio values (and vice versa): absent positions are
masked keys and the one visible token is the placeholder.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.config import ModelConfig
from mmemo.errors import ConfigError

BOTH, TEXT_ONLY, AUDIO_ONLY = 0, 1, 2  # rows of the modality-presence embedding


class TextEncoder(nn.Module):
    """A Hugging Face BERT-family model returning token states and their mask.

    The wrappers own their internals, so the training loop, export and reports never reach into a Hugging
    Face model: every encoder wrapper answers `hf_config`, `num_layers`, `layer_of(name)`,
    `gradient_checkpointing(on)` and `disable_masking()` (besides `lock` and `forward`).
    """

    def __init__(self, model: nn.Module, freeze_layers: int = 0):
        super().__init__()
        self.model = model
        self.dim = model.config.hidden_size
        self.lock(freeze_layers)

    def lock(self, layers: int) -> None:
        """Freeze the embeddings and the lower `layers` transformer layers; -1 freezes the whole encoder."""
        if layers == 0:
            return
        blocks = self.model.encoder.layer
        frozen = [self.model.embeddings, *blocks] if layers < 0 else [self.model.embeddings, *blocks[:layers]]
        for module in frozen:
            module.requires_grad_(False)

    @property
    def hf_config(self):
        """The Hugging Face config of the wrapped model (saved with a checkpoint, shown in reports)."""
        return self.model.config

    @property
    def num_layers(self) -> int:
        """The number of transformer layers."""
        return len(self.model.encoder.layer)

    def layer_of(self, name: str) -> int | None:
        """Layer depth of parameter `name` (as in this wrapper's `named_parameters`), for layer-wise LR decay.

        Returns:
            0 for the embeddings, i + 1 for transformer layer i, `num_layers` above them (final norms); None
            for a parameter of the wrapper itself (trained like the head).
        """
        return _layer_of(name, self.num_layers)

    def gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute layer activations in the backward pass instead of keeping them (less memory, more time)."""
        _gradient_checkpointing(self.model, on)

    def disable_masking(self) -> None:
        """Turn off training-time input masking; a BERT encoder has none, so this does nothing."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T_text, D_text)
        return states, attention_mask.bool()


class AudioEncoder(nn.Module):
    """A Hugging Face wav2vec2-family model; returns a learned weighted sum of all hidden layers and frame mask."""

    input_name = "input_values"

    def __init__(self, model: nn.Module, freeze_feature_encoder: bool = True, freeze_layers: int = 0):
        super().__init__()
        self.model = model
        self.dim = model.config.hidden_size
        # Base-style checkpoints (group norm) were trained without a mask and must not get one (HF docs).
        self.pass_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"
        self.layer_weights = nn.Parameter(torch.zeros(model.config.num_hidden_layers + 1))
        self.lock(freeze_feature_encoder, freeze_layers)

    def lock(self, feature_encoder: bool, layers: int) -> None:
        """Freeze the CNN feature encoder and/or the lower `layers` transformer layers (-1: everything)."""
        if feature_encoder or layers != 0:
            self.model.freeze_feature_encoder()
        if layers == 0:
            return
        blocks = self.model.encoder.layers
        frozen = (
            [self.model.feature_projection, *blocks]
            if layers < 0
            else [self.model.feature_projection, *blocks[:layers]]
        )
        for module in frozen:
            module.requires_grad_(False)
        if layers < 0:
            self.model.requires_grad_(False)

    @property
    def hf_config(self):
        """The Hugging Face config of the wrapped model (saved with a checkpoint, shown in reports)."""
        return self.model.config

    @property
    def num_layers(self) -> int:
        """The number of transformer layers."""
        return len(self.model.encoder.layers)

    def layer_of(self, name: str) -> int | None:
        """Layer depth of parameter `name` (as in this wrapper's `named_parameters`), for layer-wise LR decay.

        Returns:
            0 for the CNN front end and positional convolution, i + 1 for transformer layer i, `num_layers`
            above them; None for the wrapper's own layer-mixing weights (trained like the head).
        """
        return _layer_of(name, self.num_layers)

    def gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute layer activations in the backward pass instead of keeping them (less memory, more time)."""
        _gradient_checkpointing(self.model, on)

    def disable_masking(self) -> None:
        """Turn SpecAugment off: its masks are drawn with NumPy on the host, which breaks a torch.compile graph."""
        self.model.config.mask_time_prob = 0.0
        self.model.config.mask_feature_prob = 0.0

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            input_values, attention_mask=attention_mask if self.pass_mask else None, output_hidden_states=True
        )
        layers = torch.stack(out.hidden_states)  # (L+1, B, T_audio, D_audio)
        weights = torch.softmax(self.layer_weights, dim=0).to(layers.dtype)
        states = torch.einsum("l,lbtd->btd", weights, layers)  # (B, T_audio, D_audio)
        lengths = self.model._get_feat_extract_output_lengths(attention_mask.sum(-1))
        mask = torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]  # (B, T_audio)
        return states, mask


class WhisperAudioEncoder(nn.Module):
    """A Whisper-family encoder on log-mel features (B, n_mels, frames); same outputs as `AudioEncoder`.

    Hugging Face's `WhisperEncoder.forward` accepts only 30 s inputs (3000 frames) and ignores masks. This wrapper
    runs the encoder's own modules on the clip's frames instead: conv front end, the first T rows of the fixed
    30 s positional table, the layers with padded frames masked as keys, the final norm. A pretrained encoder
    therefore sees the positions it was trained on for the first T × 20 ms; clips longer than the table (30 s for
    pretrained encoders, `max_source_positions` × 20 ms for one built from a config) are cut to it with a warning. Whisper was trained on zero-padded 30 s windows without masks, so short
    clips without the padding are a (widely used) approximation for pretrained checkpoints.
    """

    input_name = "input_features"

    def __init__(self, model: nn.Module, freeze_feature_encoder: bool = True, freeze_layers: int = 0):
        super().__init__()
        self.model = model
        self.dim = model.config.d_model
        self.layer_weights = nn.Parameter(torch.zeros(len(model.layers) + 1))
        self.lock(freeze_feature_encoder, freeze_layers)

    @property
    def hf_config(self):
        """The Hugging Face config of the wrapped encoder (saved with a checkpoint, shown in reports)."""
        return self.model.config

    @property
    def num_layers(self) -> int:
        """The number of transformer layers."""
        return len(self.model.layers)

    def layer_of(self, name: str) -> int | None:
        """Layer depth of parameter `name` for layer-wise LR decay: 0 for the convolutions and positions, i + 1
        for transformer layer i, `num_layers` for the final norm; None for the layer-mixing weights."""
        return _layer_of(name, self.num_layers)

    def gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute layer activations in the backward pass instead of keeping them (less memory, more time)."""
        _gradient_checkpointing(self.model, on)

    def disable_masking(self) -> None:
        """Nothing to turn off: this tower has no built-in SpecAugment (`data.augment.spec_mask` masks its input)."""

    def lock(self, feature_encoder: bool, layers: int) -> None:
        """Freeze the two-convolution front end and/or the lower `layers` transformer layers (-1: everything)."""
        if feature_encoder or layers != 0:
            for module in (self.model.conv1, self.model.conv2):
                module.requires_grad_(False)
        if layers == 0:
            return
        blocks = self.model.layers
        for module in [self.model.embed_positions, *(blocks if layers < 0 else blocks[:layers])]:
            module.requires_grad_(False)
        if layers < 0:
            self.model.requires_grad_(False)

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.model
        x = F.gelu(encoder.conv1(input_features.to(encoder.conv1.weight.dtype)))  # (B, D, frames)
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
        weights = torch.softmax(self.layer_weights, dim=0).to(x.dtype)
        states = torch.einsum("l,lbtd->btd", weights, torch.stack(hidden))  # (B, T_audio, D)
        return states, mask


class Pooling(nn.Module):
    """Masked pooling over time, (B, T, D) → (B, D): "attentive" (learned softmax scores), "mean", or "first"
    (the first position: BERT's [CLS] token, or a missing modality's placeholder)."""

    KINDS = ("attentive", "mean", "first")

    def __init__(self, kind: str, dim: int):
        super().__init__()
        if kind not in self.KINDS:
            raise ConfigError(f"pooling must be one of {', '.join(self.KINDS)}, got {kind!r}")
        self.kind = kind
        self.score = nn.Linear(dim, 1) if kind == "attentive" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "first":
            return x[:, 0]
        if self.kind == "mean":
            return _masked_mean(x, mask)
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        return torch.einsum("bt,btd->bd", torch.softmax(scores, dim=-1), x)


class CrossAttentionBlock(nn.Module):
    """Text attends to audio and audio attends to text (pre-norm residuals), then a feed-forward on each."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.text_norm, self.audio_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.text_from_audio = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.audio_from_text = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.text_ff, self.audio_ff = _feed_forward(dim, dropout), _feed_forward(dim, dropout)

    def forward(self, text, text_mask, audio, audio_mask):
        t, a = self.text_norm(text), self.audio_norm(audio)
        text = text + self.text_from_audio(t, a, a, key_padding_mask=~audio_mask, need_weights=False)[0]
        audio = audio + self.audio_from_text(a, t, t, key_padding_mask=~text_mask, need_weights=False)[0]
        return text + self.text_ff(text), audio + self.audio_ff(audio)


class CrossAttentionFusion(nn.Module):
    """`layers` bidirectional cross-attention blocks, then pooling of each stream: → (B, 2·dim)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        dropout: float,
        text_pooling: str = "attentive",
        audio_pooling: str = "attentive",
    ):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"fusion_dim ({dim}) must be divisible by fusion_heads ({heads})")
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, dropout) for _ in range(layers))
        self.text_pool, self.audio_pool = Pooling(text_pooling, dim), Pooling(audio_pooling, dim)
        self.out_dim = 2 * dim

    def forward(self, text, text_mask, audio, audio_mask) -> torch.Tensor:
        for block in self.blocks:
            text, audio = block(text, text_mask, audio, audio_mask)
        return torch.cat([self.text_pool(text, text_mask), self.audio_pool(audio, audio_mask)], dim=-1)


class ConcatFusion(nn.Module):
    """Late fusion baseline: each stream pooled on its own, concatenated: → (B, 2·dim)."""

    def __init__(self, dim: int, text_pooling: str = "mean", audio_pooling: str = "mean"):
        super().__init__()
        self.text_pool, self.audio_pool = Pooling(text_pooling, dim), Pooling(audio_pooling, dim)
        self.out_dim = 2 * dim

    def forward(self, text, text_mask, audio, audio_mask) -> torch.Tensor:
        return torch.cat([self.text_pool(text, text_mask), self.audio_pool(audio, audio_mask)], dim=-1)


class EmotionModel(nn.Module):
    """Two towers, a fusion head and a classifier; `forward(text=None, audio=None)` → {"logits": (B, C)}.

    Args:
        cfg: the model section of the config (fusion sizes, freezing, dropout).
        num_labels: number of emotion classes.
        text_model: a Hugging Face BERT-family `PreTrainedModel` (pretrained or built from a config).
        audio_model: a Hugging Face wav2vec2-family `PreTrainedModel`, or a Whisper encoder.
    """

    def __init__(self, cfg: ModelConfig, num_labels: int, text_model: nn.Module, audio_model: nn.Module):
        super().__init__()
        dim = cfg.fusion_dim
        self.text_encoder = TextEncoder(text_model, cfg.freeze_text_layers)
        tower = WhisperAudioEncoder if is_whisper(audio_model.config) else AudioEncoder
        self.audio_encoder = tower(audio_model, cfg.freeze_feature_encoder, cfg.freeze_audio_layers)
        self.text_proj = nn.Linear(self.text_encoder.dim, dim)
        self.audio_proj = nn.Linear(self.audio_encoder.dim, dim)
        self.text_placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.audio_placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.presence = nn.Embedding(3, dim)
        if cfg.audio_downsample < 1:
            raise ConfigError(f"model.audio_downsample must be at least 1, got {cfg.audio_downsample}")
        self.audio_downsample = cfg.audio_downsample
        self.acoustic_proj = None
        if cfg.acoustic_features:
            from mmemo.acoustic import FEATURE_NAMES, Z_CLIP

            self.acoustic_clip = Z_CLIP  # as SpeakerProfile.normalise clips

            if cfg.acoustic_normalization not in ("global", "speaker"):
                raise ConfigError(
                    f"model.acoustic_normalization must be 'global' or 'speaker', got {cfg.acoustic_normalization!r}"
                )
            n = len(FEATURE_NAMES)
            # The training clips' statistics: the reference for clips whose speaker is unknown.
            self.register_buffer("acoustic_mean", torch.zeros(n))
            self.register_buffer("acoustic_std", torch.ones(n))
            self.acoustic_proj = nn.Sequential(
                nn.Dropout(cfg.dropout), nn.Linear(n, dim), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(dim, dim)
            )
        if cfg.fusion == "cross_attention":
            self.fusion = CrossAttentionFusion(
                dim, cfg.fusion_heads, cfg.fusion_layers, cfg.dropout, cfg.text_pooling, cfg.audio_pooling
            )
        elif cfg.fusion == "concat":
            self.fusion = ConcatFusion(dim, cfg.text_pooling, cfg.audio_pooling)
        else:
            raise ConfigError(f"model.fusion must be 'cross_attention' or 'concat', got {cfg.fusion!r}")
        # The acoustic token is also read out directly: one position among a clip's hundreds of frames, it
        # would otherwise reach the classifier only as far as pooling learns to single it out.
        head_dim = self.fusion.out_dim + (dim if self.acoustic_proj is not None else 0)
        self.classifier = nn.Sequential(
            nn.LayerNorm(head_dim),
            nn.Dropout(cfg.dropout),
            nn.Linear(head_dim, dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(dim, num_labels),
        )

    def encode_text(self, text: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenized text → projected token states (B, T_text, D) and mask (B, T_text)."""
        states, mask = self.text_encoder(text["input_ids"], text["attention_mask"])
        return self.text_proj(states), mask

    def encode_audio(self, audio: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded waveforms or log-mel features → projected frame states (B, T_audio, D) and mask (B, T_audio)."""
        states, mask = self.audio_encoder(audio[self.audio_encoder.input_name], audio["attention_mask"])
        states = self.audio_proj(states)
        if self.audio_downsample > 1:
            states, mask = _downsample(states, mask, self.audio_downsample)
        if self.acoustic_proj is None:
            return states, mask
        token = self.acoustic_proj(self.standardise_acoustic(audio["functionals"], audio.get("reference")))
        states = torch.cat([token[:, None].to(states.dtype), states], dim=1)  # (B, 1 + T_audio, D)
        return states, torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    def set_acoustic_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training clips' functionals mean and (floored) std, saved with the weights."""
        self.acoustic_mean.copy_(torch.as_tensor(mean))
        self.acoustic_std.copy_(torch.as_tensor(std))

    def standardise_acoustic(self, functionals: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Z-score functionals (B, F) against per-clip references (B, 2, F) of mean and std (a speaker's
        profile); NaN references, or none, fall back to the training statistics. Clipped to ±Z_CLIP."""
        mean, std = self.acoustic_mean.expand_as(functionals), self.acoustic_std.expand_as(functionals)
        if reference is not None:
            known = ~torch.isnan(reference[:, 0, :1])  # (B, 1)
            mean = torch.where(known, reference[:, 0].nan_to_num(), mean)
            std = torch.where(known, reference[:, 1].nan_to_num(nan=1.0), std)
        return ((functionals.float() - mean) / std).clamp(-self.acoustic_clip, self.acoustic_clip)

    def fuse(self, text_enc=None, audio_enc=None, text_present=None, audio_present=None) -> torch.Tensor:
        """Fuse encoded streams into logits (B, C); a stream that is None or not present for a sample is absent."""
        if text_enc is None and audio_enc is None:
            raise ValueError("at least one of text and audio is needed")
        batch_size = (text_enc or audio_enc)[0].shape[0]
        device = (text_enc or audio_enc)[0].device
        text, text_mask, text_present = self._with_placeholder(
            text_enc, text_present, self.text_placeholder, batch_size, device
        )
        audio, audio_mask, audio_present = self._with_placeholder(
            audio_enc, audio_present, self.audio_placeholder, batch_size, device
        )
        if not bool((text_present | audio_present).all()):
            raise ValueError("every sample needs text or audio")
        kind = torch.full_like(text_present, BOTH, dtype=torch.long)
        kind = kind.masked_fill(~audio_present, TEXT_ONLY).masked_fill(~text_present, AUDIO_ONLY)
        presence = self.presence(kind)[:, None, :]  # (B, 1, D)
        audio = audio + presence
        pooled = self.fusion(text + presence, text_mask, audio, audio_mask)  # (B, 2D)
        if self.acoustic_proj is not None:  # the acoustic token, or the placeholder of absent audio
            pooled = torch.cat([pooled, audio[:, 0]], dim=-1)  # (B, 3D)
        return self.classifier(pooled)

    def forward(
        self,
        text: dict | None = None,
        audio: dict | None = None,
        text_present: torch.Tensor | None = None,
        audio_present: torch.Tensor | None = None,
        views: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    ) -> dict:
        """Classify a batch; either modality may be None (absent for the whole batch).

        Args:
            text: {"input_ids", "attention_mask"} from the tokenizer, or None.
            audio: {"input_values", "attention_mask"} from the feature extractor, or None.
            text_present / audio_present: (B,) bools marking which samples really have that modality.
            views: more (text_present, audio_present) pairs to fuse the same encodings with (training on
                several modality subsets at once: the encoders run once, the fusion head once per view).

        Returns:
            {"logits": (B, num_labels)}, plus "view_logits": one (B, num_labels) per view when views are given.
        """
        text_enc = self.encode_text(text) if text is not None else None
        audio_enc = self.encode_audio(audio) if audio is not None else None
        out = {"logits": self.fuse(text_enc, audio_enc, text_present, audio_present)}
        if views:
            out["view_logits"] = [self.fuse(text_enc, audio_enc, t, a) for t, a in views]
        return out

    def logits_by_condition(
        self,
        text: dict | None,
        audio: dict | None,
        text_present: torch.Tensor | None = None,
        audio_present: torch.Tensor | None = None,
        conditions: Sequence[str] = ("both", "text", "audio"),  # mmemo.metrics.CONDITIONS
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Encode a batch once and classify it under each evaluation condition; the one place that does this.

        "both" classifies every row with whatever it has, "text" the rows with text from the text alone, "audio"
        the rows with audio from the audio alone. One fusion call covers all conditions: each row as given,
        then the rows that have both modalities once with the text alone and once with the audio alone (a row's
        logits depend only on its own masked streams, so stacking changes nothing but the number of calls). A
        row with one modality is classified once, and those logits serve "both" and its own modality.

        Args:
            text / audio / text_present / audio_present: as for `forward`.
            conditions: the conditions to return.

        Returns:
            {condition: (logits (N_c, C), rows (N_c,) indices into the batch, ascending)}; N_c is 0 for a
            condition that no row can serve.
        """
        text_enc = self.encode_text(text) if text is not None else None
        audio_enc = self.encode_audio(audio) if audio is not None else None
        states = (text_enc or audio_enc)[0]
        batch_size, device = states.shape[0], states.device

        def present(given, encoded):
            if encoded is None:
                return torch.zeros(batch_size, dtype=torch.bool, device=device)
            return torch.ones(batch_size, dtype=torch.bool, device=device) if given is None else given.to(device)

        text_present, audio_present = present(text_present, text_enc), present(audio_present, audio_enc)
        both = (text_present & audio_present).nonzero().squeeze(1)  # (N_both,)
        rows = torch.cat([torch.arange(batch_size, device=device), both, both])  # (B + 2·N_both,)
        yes, no = torch.ones_like(both, dtype=torch.bool), torch.zeros_like(both, dtype=torch.bool)

        def stack(encoded):  # (B, T, D) → (B + 2·N_both, T, D), and its mask alike
            return None if encoded is None else tuple(x[rows] for x in encoded)

        logits = self.fuse(
            stack(text_enc),
            stack(audio_enc),
            torch.cat([text_present, yes, no]),
            torch.cat([audio_present, no, yes]),
        )  # (B + 2·N_both, C)
        given, alone = logits[:batch_size], {"text": logits[batch_size : batch_size + len(both)]}
        alone["audio"] = logits[batch_size + len(both) :]
        out = {}
        for condition in conditions:
            if condition == "both":
                out["both"] = (given, torch.arange(batch_size, device=device))
                continue
            if condition not in alone:
                raise ValueError(f"condition must be 'both', 'text' or 'audio', got {condition!r}")
            served = text_present if condition == "text" else audio_present
            by_row = given.clone()
            by_row[both] = alone[condition]
            keep = served.nonzero().squeeze(1)
            out[condition] = (by_row[keep], keep)
        return out

    @staticmethod
    def _with_placeholder(encoded, present, placeholder, batch_size, device):
        """Swap absent samples' streams for the placeholder token; returns states, mask, present (B,)."""
        if encoded is None:
            states = placeholder.expand(batch_size, 1, -1)  # (B, 1, D)
            mask = torch.ones(batch_size, 1, dtype=torch.bool, device=device)
            return states, mask, torch.zeros(batch_size, dtype=torch.bool, device=device)
        states, mask = encoded
        if present is None:
            return states, mask, torch.ones(batch_size, dtype=torch.bool, device=device)
        present = present.to(device)
        # Absent samples: zero every position (no NaN can leak through a masked key), show only the placeholder.
        mask = mask & present[:, None]
        states = states.masked_fill(~mask[..., None], 0.0)
        first = torch.where(present[:, None], states[:, 0], placeholder.to(states.dtype))  # (B, D)
        states = torch.cat([first[:, None], states[:, 1:]], dim=1)  # (B, T, D)
        mask = torch.cat([mask[:, :1] | ~present[:, None], mask[:, 1:]], dim=1)
        return states, mask, present


def _layer_of(name: str, depth: int) -> int | None:
    """1..depth for transformer layer i (0-based i-1), 0 below them, depth for anything above (final norms);
    None outside the wrapped Hugging Face model."""
    if not name.startswith("model."):
        return None
    # BERT and wav2vec2 name layers encoder.layer(s).i, Whisper's encoder layers.i
    match = re.search(r"\.(?:encoder\.)?layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    below = (
        "embeddings",
        "feature_extractor",
        "feature_projection",
        "masked_spec_embed",
        "pos_conv_embed",
        "conv1.",
        "conv2.",
        "embed_positions",
    )
    return 0 if any(part in name for part in below) else depth


def _gradient_checkpointing(model: nn.Module, on: bool) -> None:
    if on:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()


def _feed_forward(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, 4 * dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(4 * dim, dim),
        nn.Dropout(dropout),
    )


def _downsample(x: torch.Tensor, mask: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean over groups of `factor` frames: (B, T, D), (B, T) → (B, ⌈T/factor⌉, D) and its mask."""
    batch, length, dim = x.shape
    pad = -length % factor
    weights = F.pad(mask.to(x.dtype), (0, pad)).view(batch, -1, factor, 1)  # (B, T', factor, 1)
    groups = F.pad(x, (0, 0, 0, pad)).view(batch, -1, factor, dim)  # (B, T', factor, D)
    counts = weights.sum(2)  # (B, T', 1)
    return (groups * weights).sum(2) / counts.clamp(min=1.0), counts.squeeze(-1) > 0


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(x.dtype)[..., None]  # (B, T, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def build_encoders(cfg: ModelConfig, vocab_size: int | None = None) -> tuple[nn.Module, nn.Module]:
    """The two Hugging Face towers: from checkpoints (hub id or folder) or, when none is named, from configs.

    Args:
        cfg: the model config; `text_config` / `audio_config` are BertConfig / Wav2Vec2Config fields (SDPA
            attention unless they set `attn_implementation`, as `mmemo bench train`'s naive baseline does).
        vocab_size: the tokenizer's vocabulary size for a text encoder built from a config.
    """
    from transformers import AutoConfig, AutoModel, BertConfig, Wav2Vec2Config

    remote = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.text_encoder:
        text_model = AutoModel.from_pretrained(
            cfg.text_encoder, attn_implementation="sdpa", add_pooling_layer=False, **remote
        )
    else:
        config = BertConfig(**{"vocab_size": vocab_size, "attn_implementation": "sdpa", **cfg.text_config})
        text_model = AutoModel.from_config(config, add_pooling_layer=False)
    if cfg.audio_encoder and is_whisper(AutoConfig.from_pretrained(cfg.audio_encoder, **remote)):
        from transformers import WhisperForAudioClassification

        # The encoder alone: this class loads "model.encoder.*" weights of a full Whisper checkpoint, no decoder.
        audio_model = WhisperForAudioClassification.from_pretrained(
            cfg.audio_encoder, attn_implementation="sdpa"
        ).encoder
    elif cfg.audio_encoder:
        audio_model = AutoModel.from_pretrained(cfg.audio_encoder, attn_implementation="sdpa", **remote)
    elif cfg.audio_config.get("model_type", "wav2vec2") == "whisper":
        audio_model = _whisper_encoder({**cfg.audio_config, "attn_implementation": "sdpa"})
    else:
        audio_model = AutoModel.from_config(Wav2Vec2Config(**{"attn_implementation": "sdpa", **cfg.audio_config}))
    return text_model, audio_model


def is_whisper(config) -> bool:
    """Whether a Hugging Face config (object or dict) describes a Whisper-family model."""
    kind = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return kind == "whisper"


def _whisper_encoder(config: dict) -> nn.Module:
    """A randomly initialised Whisper encoder (no decoder) from WhisperConfig fields."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = {key: value for key, value in config.items() if key != "model_type"}
    return WhisperEncoder(WhisperConfig(**config))


def encoders_from_configs(text_config: dict, audio_config: dict) -> tuple[nn.Module, nn.Module]:
    """Rebuild both towers (random weights) from full saved Hugging Face config dicts; no network."""
    from transformers import AutoConfig, AutoModel

    def build(config: dict, **kwargs) -> nn.Module:
        config = dict(config)
        return AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config), **kwargs)

    audio = _whisper_encoder(audio_config) if is_whisper(audio_config) else build(audio_config)
    return build(text_config, add_pooling_layer=False), audio


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, ignore_index=-100)
