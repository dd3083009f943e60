import pytest

from seqlab.config import TokenizerConfig
from seqlab.data.tokenizer import BOS, EOS, PAD, UNK, Tokenizer
from seqlab.errors import UserError

SENTENCES = ["the cat sat on the mat", "a dog ran after the cat", "the mat was red", "dogs and cats"] * 20


@pytest.mark.parametrize("kind", ["bpe", "unigram", "word", "char"])
def test_round_trip_and_special_ids(kind):
    tok = Tokenizer.train(SENTENCES, TokenizerConfig(type=kind, vocab_size=40))
    assert [tok.sp.id_to_piece(i) for i in (PAD, UNK, BOS, EOS)] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    for s in SENTENCES[:4]:
        ids = tok.encode(s)
        assert all(i > EOS for i in ids)
        assert tok.decode(ids) == s
    assert len(tok) <= 40


def test_decode_stops_at_eos_and_skips_pad():
    tok = Tokenizer.train(SENTENCES, TokenizerConfig(type="word", vocab_size=30))
    ids = tok.encode("the cat")
    assert tok.decode([BOS] + ids + [EOS] + tok.encode("dog") + [PAD]) == "the cat"


def test_save_and_load(tmp_path):
    tok = Tokenizer.train(SENTENCES, TokenizerConfig(type="bpe", vocab_size=30))
    tok.save(tmp_path / "t.model")
    again = Tokenizer.load(tmp_path / "t.model")
    assert again.encode("the red cat") == tok.encode("the red cat")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="junk.model"):
        Tokenizer.load(tmp_path / "junk.model")
    with pytest.raises(UserError, match="not found"):
        Tokenizer.load(tmp_path / "missing.model")
