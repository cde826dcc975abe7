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

The three tower wrappers (freezing, layer weights, gradient checkpointing) and the builders that load or
rebuild their Hugging Face models live in `mmemo/encoders.py`; this file is what sits on top of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.config import ModelConfig
from mmemo.data.speakers import Z_CLIP
from mmemo.encoders import AudioEncoder, TextEncoder, WhisperAudioEncoder, is_whisper
from mmemo.errors import ConfigError

BOTH, TEXT_ONLY, AUDIO_ONLY = 0, 1, 2  # rows of the modality-presence embedding


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
        self.audio_head = cfg.audio_head
        if cfg.audio_head == "pooled":
            self.pooled_layers = self._check_pooled_layers(cfg.pooled_layers)
            shape = (len(self.pooled_layers), self.audio_encoder.dim)
            # The training clips' statistics of the pooled states: the reference for clips of unknown speakers.
            self.register_buffer("pooled_mean", torch.zeros(shape))
            self.register_buffer("pooled_std", torch.ones(shape))
            self.audio_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(shape[0] * shape[1], dim))
            self.audio_encoder.layer_weights.requires_grad_(False)  # the frame mix is not used
        else:
            self.audio_proj = nn.Linear(self.audio_encoder.dim, dim)
        self.text_placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.audio_placeholder = nn.Parameter(torch.randn(dim) * 0.02)
        self.presence = nn.Embedding(3, dim)
        self.audio_downsample = cfg.audio_downsample
        self.acoustic_proj = None
        if cfg.acoustic_features:
            from mmemo.data.acoustic import FEATURE_NAMES

            n = len(FEATURE_NAMES)
            # The training clips' statistics: the reference for clips whose speaker is unknown.
            self.register_buffer("acoustic_mean", torch.zeros(n))
            self.register_buffer("acoustic_std", torch.ones(n))
            self.acoustic_proj = nn.Sequential(
                nn.Dropout(cfg.dropout), nn.Linear(n, dim), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(dim, dim)
            )
        if cfg.fusion == "concat":
            self.fusion = ConcatFusion(dim, cfg.text_pooling, cfg.audio_pooling)
        else:
            self.fusion = CrossAttentionFusion(
                dim, cfg.fusion_heads, cfg.fusion_layers, cfg.dropout, cfg.text_pooling, cfg.audio_pooling
            )
        # Clip-level tokens (the acoustic statistics', the pooled tower states') are also read out directly: one
        # position among a clip's frames reaches the classifier through pooling only as far as pooling learns to
        # single it out, and a pooled token's linear evidence is blurred by the fusion block (EmoDB: 0.915 → 0.924
        # audio-only UA with its read-out, docs/pretrained.md).
        self.clip_tokens = int(self.acoustic_proj is not None) + int(cfg.audio_head == "pooled")
        head_dim = self.fusion.out_dim + self.clip_tokens * dim
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
        """Padded waveforms or log-mel features → projected frame states (B, T_audio, D) and mask (B, T_audio);
        with the pooled head one token per clip (B, 1, D), from `audio["pooled"]` when a frozen tower's states
        were computed beforehand."""
        if self.audio_head == "pooled":
            pooled = audio.get("pooled")  # (B, layers, D_audio)
            if pooled is None:
                pooled = self.audio_encoder.pooled(
                    audio[self.audio_encoder.input_name], audio["attention_mask"], self.pooled_layers
                )
            z = standardise(pooled.float(), self.pooled_mean, self.pooled_std, audio.get("pooled_reference"), Z_CLIP)
            states = self.audio_proj(z.flatten(1))[:, None]  # (B, 1, D)
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        else:
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
        return standardise(functionals.float(), self.acoustic_mean, self.acoustic_std, reference, Z_CLIP)

    def set_pooled_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training clips' pooled-state mean and (floored) std (layers, D_audio), saved with the weights."""
        self.pooled_mean.copy_(torch.as_tensor(mean))
        self.pooled_std.copy_(torch.as_tensor(std))

    def _check_pooled_layers(self, layers: list[int]) -> tuple[int, ...]:
        depth = self.audio_encoder.num_layers
        if any(not 0 <= layer <= depth for layer in layers) or len(set(layers)) != len(layers):
            raise ConfigError(
                f"model.pooled_layers must be distinct hidden-state indices from 0 (the input embeddings) to {depth} "
                f"(this audio tower's last layer), got {layers}"
            )
        return tuple(layers) or tuple(range(depth + 1))

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
        if self.clip_tokens:  # the clip-level tokens, or the placeholder (and zeros) of absent audio
            # masked positions read as zeros, and zeros after the stream: absent audio is the placeholder alone
            # however long the batch's audio (an exported graph must not bake in a length test)
            tokens = audio.masked_fill(~audio_mask[..., None], 0.0)
            tokens = nn.functional.pad(tokens, (0, 0, 0, self.clip_tokens))[:, : self.clip_tokens]  # (B, k, D)
            pooled = torch.cat([pooled, tokens.flatten(1)], dim=-1)  # (B, (2 + k)·D)
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
            audio: {"input_values" (waveforms) or "input_features" (log-mel, Whisper), "attention_mask"} from the
                feature extractor (plus "functionals", and optionally "reference", with acoustic features), or None.
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


def standardise(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reference: torch.Tensor | None, clip: float
) -> torch.Tensor:
    """Z-score x (B, ...) against per-clip references (B, 2, ...) of mean and std (a speaker's statistics); a row
    whose reference is NaN, or no reference at all, uses `mean` and `std`. Clipped to ±clip, as
    `SpeakerProfile.normalise` clips."""
    mean, std = mean.expand_as(x), std.expand_as(x)
    if reference is not None:
        known = ~torch.isnan(reference[:, 0].flatten(1)[:, :1])  # (B, 1)
        known = known.view(-1, *[1] * (x.dim() - 1))
        mean = torch.where(known, reference[:, 0].nan_to_num(), mean)
        std = torch.where(known, reference[:, 1].nan_to_num(nan=1.0), std)
    return ((x - mean) / std).clamp(-clip, clip)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(x.dtype)[..., None]  # (B, T, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, ignore_index=-100)
