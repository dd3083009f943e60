import pytest
import torch

from seqlab.config import TokenizerConfig
from seqlab.data.reader import ParallelCorpus, read_labeled, read_text
from seqlab.data.tasks import Codec, parse_vector
from seqlab.data.tokenizer import ByteTokenizer, Tokenizer
from seqlab.errors import UserError


def word_tokenizer():
    return Tokenizer.train(["a b c d e f"] * 10, TokenizerConfig(type="word", vocab_size=12))


def test_length_filter_is_counted_with_the_first_line():
    tok = word_tokenizer()
    corpus = ParallelCorpus(["a b", "a b c d e f", "c", "a b c d"], ["b a", "f e", "c", "d c b a"], [1, 2, 5, 7])
    examples, report = Codec("transformer", tok, tok).encode(corpus, "x", max_len=3)
    assert [e.index for e in examples] == [0, 2]
    assert report.too_long == 2 and report.first_too_long_line == 2 and report.pairs == 2


def test_classifier_labels_and_scores(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("pos\ta b\n\nneg\tc d\n")
    corpus = read_labeled(path)
    assert corpus.src == ["a b", "c d"] and corpus.tgt == ["pos", "neg"] and corpus.report.empty == 1
    tok = word_tokenizer()
    examples, _ = Codec("classifier", tok, tok, labels=["neg", "pos"]).encode(corpus, path)
    assert [e.tgt for e in examples] == [1, 0]
    with pytest.raises(UserError, match=r"t.tsv:1: label 'pos' is not a number"):
        Codec("classifier", tok, tok, labels=None).encode(corpus, path)
    with pytest.raises(UserError, match=r"t.tsv:3: label 'neg' was not seen in training"):
        Codec("classifier", tok, tok, labels=["pos"]).encode(corpus, path)
    path.write_text("pos a b\n")
    with pytest.raises(UserError, match=r"t.tsv:1: expected 'label<TAB>text'"):
        read_labeled(path)


def test_lm_text_and_vectors(tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text("a b c\n\n  \nd e\n")
    corpus = read_text(path)
    assert corpus.tgt == ["a b c", "d e"] and corpus.line_numbers == [1, 4] and corpus.report.empty == 2
    tok = word_tokenizer()
    examples, _ = Codec("gpt", tok, tok).encode(corpus, path)
    assert examples[0].src is None and examples[1].tgt == tok.encode("d e")
    assert torch.equal(parse_vector("1 0 2.5", 3, "x"), torch.tensor([1.0, 0.0, 2.5]))
    with pytest.raises(UserError, match=r"v.src:4: expected 3 finite numbers \(model.input_dim\), got 2"):
        parse_vector("1 2", 3, "v.src:4")
    with pytest.raises(UserError, match="expected 3 numbers"):
        parse_vector("1 x 2", 3, "v.src:4")


def test_byte_tokenizer_round_trip(tmp_path):
    tok = ByteTokenizer()
    text = "naïve café — 한국어"
    assert tok.decode(tok.encode(text)) == text and len(tok) == 260
    tok.save(tmp_path / "tokenizer.model")
    assert isinstance(Tokenizer.load(tmp_path / "tokenizer.model"), ByteTokenizer)


def test_byte_pieces_name_specials_and_bytes():
    tok = ByteTokenizer()
    assert [tok.id_to_piece(i) for i in (0, 2, 3)] == ["<pad>", "<bos>", "<eos>"]
    assert tok.pieces("aé") == ["a", "<0xC3>", "<0xA9>"]
