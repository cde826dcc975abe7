"""Text: train a WordPiece tokenizer on transcripts when no pretrained tokenizer is given."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Characters every tokenizer knows even when the training transcripts lack them, so an unseen word in a
# Latin script splits into pieces instead of becoming one [UNK].
_BASE_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Build a BERT-style WordPiece tokenizer from `texts`, deterministically.

    Text is NFKC-normalised and lower-cased (accents kept); CJK characters, emoji and other symbols are
    split into tokens of their own, so Chinese, accented and emoji-laden transcripts all tokenize sensibly.
    The vocabulary is every character seen (plus ASCII), as word-initial and `##` continuation pieces, then
    whole words by frequency (ties alphabetical) up to `vocab_size`. (The `tokenizers` WordPiece trainer
    breaks ties differently from run to run, which would make a seeded training run irreproducible.)

    Args:
        texts: training transcripts (empty strings are fine).
        vocab_size: the vocabulary size to aim for; the character pieces are always kept, even past it.

    Returns:
        A Hugging Face fast tokenizer that adds [CLS] ... [SEP] and saves with `save_pretrained`.
    """
    tok = Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.BertPreTokenizer(),
            pre_tokenizers.Split(Regex(r"[\p{So}\p{Sk}]"), behavior="isolated"),  # emoji and symbols stand alone
        ]
    )
    counts = Counter(
        word
        for text in texts
        if text
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
    )
    chars = sorted(set(_BASE_ALPHABET).union(*counts))
    vocab = SPECIAL_TOKENS + chars + ["##" + c for c in chars]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: max(0, vocab_size - len(vocab))]
    tok.model = models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
