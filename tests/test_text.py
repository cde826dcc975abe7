from mmemo.data.text import train_wordpiece

TEXTS = [
    "I am so happy today",
    "this is terrible news",
    "我今天很高兴",
    "Ça va très bien, merci 😀",
    "Heute abend könnte ich es ihm sagen.",
] * 4


def test_wordpiece_handles_any_script():
    tok = train_wordpiece(TEXTS, vocab_size=300)
    assert tok.tokenize("我很高兴") == ["我", "很", "高", "兴"]  # each CJK character is a token
    assert "😀" in tok.tokenize("happy😀")  # emoji split off, the word survives
    assert "happy" in tok.tokenize("happy😀")
    assert tok.unk_token not in tok.tokenize("très")
    # a word with letters the corpus never had still splits into pieces instead of one [UNK]
    assert tok.unk_token not in tok.tokenize("wxyz")
    ids = tok("hello")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_wordpiece_saves_and_reloads(tmp_path):
    from transformers import AutoTokenizer

    tok = train_wordpiece(TEXTS, vocab_size=300)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("我今天很高兴 😀")["input_ids"] == tok("我今天很高兴 😀")["input_ids"]


def test_wordpiece_is_deterministic():
    texts = [f"the {w} went {v} today" for w in ("cat", "dog", "bird", "fish") for v in ("home", "out", "away")]
    vocabs = [train_wordpiece(texts * 3, vocab_size=130).get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
