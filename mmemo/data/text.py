"""Text: train a WordPiece tokenizer on transcripts when no pretrained tokenizer is given."""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Letters every tokenizer knows even when the training transcripts lack them, so an unseen word in a
# Latin script splits into pieces instead of becoming one [UNK].
_BASE_ALPHABET = list(string.ascii_lowercase + string.digits + string.punctuation) + [
    chr(c) for c in range(0xC0, 0x250) if chr(c).isalpha() and chr(c).islower()
]


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on `texts`.

    Text is NFKC-normalised and lower-cased (accents kept); CJK characters, emoji and other symbols are
    split into tokens of their own, so Chinese, accented and emoji-laden transcripts all tokenize sensibly.

    Args:
        texts: training transcripts (empty strings are fine).
        vocab_size: the largest vocabulary to learn.

    Returns:
        A Hugging Face fast tokenizer that adds [CLS] ... [SEP] and saves with `save_pretrained`.
    """
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True),
    ])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Split(Regex(r"[\p{So}\p{Sk}]"), behavior="isolated"),  # emoji and symbols stand alone
    ])
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=_BASE_ALPHABET
    )
    tok.train_from_iterator((t for t in texts if t), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )
