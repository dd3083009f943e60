import pytest

from seqlab.data.reader import read_lines, read_parallel
from seqlab.errors import UserError


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_reads_aligned_pairs_and_keeps_line_numbers(tmp_path):
    src = write(tmp_path / "a.src", b"one\n\nthree\nfour\r\n")
    tgt = write(tmp_path / "a.tgt", b"eins\nzwei\n  \nvier\r\n")
    corpus = read_parallel(src, tgt)
    assert corpus.src == ["one", "four"] and corpus.tgt == ["eins", "vier"]
    assert corpus.line_numbers == [1, 4]
    assert corpus.report.empty == 2 and corpus.report.first_empty_line == 2
    assert "skipped 2 with an empty side (first at line 2)" in corpus.report.summary("train")


def test_unequal_line_counts_name_both_files_and_the_line(tmp_path):
    src = write(tmp_path / "x.src", b"a\nb\nc\n")
    tgt = write(tmp_path / "x.tgt", b"a\nb\n")
    with pytest.raises(UserError) as err:
        read_parallel(src, tgt)
    msg = str(err.value)
    assert "x.src has 3 lines" in msg and "x.tgt has 2" in msg and "line 3" in msg and "\n" not in msg


def test_invalid_utf8_names_file_line_and_column(tmp_path):
    src = write(tmp_path / "bad.src", "ok\nalso ok\nca".encode() + b"\xe9 va\n")
    with pytest.raises(UserError, match=r"bad.src:3: invalid UTF-8 \(byte 0xe9 at column 3\)"):
        read_lines(src)


def test_unicode_line_separator_does_not_break_alignment(tmp_path):
    src = write(tmp_path / "u.src", "a\u2028b\nc\n".encode())
    tgt = write(tmp_path / "u.tgt", "x\ny\n".encode())
    assert read_parallel(src, tgt).src == ["a\u2028b", "c"]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_lines(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="is a directory"):
        read_lines(tmp_path)


def test_file_without_final_newline(tmp_path):
    assert read_lines(write(tmp_path / "f", b"a\nb")) == ["a", "b"]
    assert read_lines(write(tmp_path / "g", b"")) == []
