"""Model and workload sizes for `mmemo bench`, as data: random-weight models built from these configs.

`TINY_MODEL` is mmemo's one tiny model: `mmemo bench predict --size tiny`, the test suite's model (tests/conftest.py)
and the sizes tests/test_readme.py gives the README's training commands. `PREDICT` holds `ModelConfig` fields for
`mmemo bench predict`; `TRAIN` holds, for `mmemo bench train`, the `ModelConfig` fields plus the clip lengths, the
naive baseline's batch size and the tokenizer's vocabulary size.
"""

from __future__ import annotations

import copy

# SpecAugment draws its masks with NumPy on the host and layerdrop makes the work per step random: both off.
_QUIET = {"layerdrop": 0.0, "mask_time_prob": 0.0}

# Width 32, one layer per tower, no dropout, layerdrop or masking: it trains in seconds on a CPU, deterministically.
TINY_MODEL = {
    "text_config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    },
    "audio_config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": [16] * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "feat_extract_norm": "group",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        **_QUIET,
    },
    "tokenizer_vocab_size": 300,
    "fusion_dim": 32,
    "fusion_heads": 2,
    "fusion_layers": 1,
    "freeze_feature_encoder": False,
}

PREDICT = {
    "tiny": TINY_MODEL,  # at inference dropout, layerdrop, masking and freezing change nothing
    # BertConfig's and Wav2Vec2Config's defaults are bert-base and wav2vec2-base; spelt out for the reader.
    "base": {
        "text_config": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
        },
        "audio_config": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "conv_dim": [512] * 7,
            "feat_extract_norm": "group",
        },
    },
}

TRAIN = {
    # configs/quickstart.yaml's shapes (a test keeps them equal), with the towers' default dropout.
    "tiny": {
        "model": {
            "text_config": {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "max_position_embeddings": 128,
            },
            "audio_config": {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "conv_dim": [32] * 7,
                "num_conv_pos_embeddings": 32,
                "num_conv_pos_embedding_groups": 4,
                "feat_extract_norm": "group",
                **_QUIET,
            },
            "fusion_dim": 64,
            "fusion_heads": 4,
        },
        "seconds": (1.0, 4.0),
        "batch_size": 8,
        "vocab_size": 500,
    },
    # BERT-base and wav2vec2-base shapes (as `mmemo bench predict --size base`), BERT's full vocabulary.
    "base": {
        "model": {
            **copy.deepcopy(PREDICT["base"]),
            "audio_config": {**PREDICT["base"]["audio_config"], **_QUIET},
        },
        "seconds": (2.0, 10.0),
        "batch_size": 8,
        "vocab_size": 30522,
    },
}
