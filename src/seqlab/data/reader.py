"""Reading line-aligned parallel text, with every problem reported by file and line.

Errors (``UserError``): a missing file, a directory, invalid UTF-8, unequal line counts.
Skipped and counted (``CorpusReport``): pairs with an empty side. Pairs over the length limit are
dropped and counted later, after subword segmentation (:meth:`seqlab.data.tasks.Codec.encode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqlab.errors import UserError


@dataclass
class CorpusReport:
    """What the reader kept and dropped, with the first line number of each kind of drop."""

    pairs: int = 0
    empty: int = 0
    first_empty_line: int | None = None
    too_long: int = 0
    first_too_long_line: int | None = None

    def summary(self, name: str) -> str:
        text = f"{name}: {self.pairs} pairs"
        if self.empty:
            text += f"; skipped {self.empty} with an empty side (first at line {self.first_empty_line})"
        if self.too_long:
            text += f"; dropped {self.too_long} over the length limit (first at line {self.first_too_long_line})"
        return text


@dataclass
class ParallelCorpus:
    src: list[str]
    tgt: list[str]
    line_numbers: list[int]  # 1-based line of each kept pair in the original files
    report: CorpusReport = field(default_factory=CorpusReport)

    def add(self, number: int, src: str | None, tgt: str) -> None:
        """Keep a pair, or skip and count it when a side is empty (``src=None``: there is no source side)."""
        if src == "" or not tgt:
            self.report.empty += 1
            self.report.first_empty_line = self.report.first_empty_line or number
            return
        self.src.append(src or "")
        self.tgt.append(tgt)
        self.line_numbers.append(number)
        self.report.pairs = len(self.src)


def check_readable(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the path of a text file")
    return path


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file, without line endings. Only ``\\n`` (and ``\\r\\n``) end a line,
    so Unicode separators such as U+2028 inside a sentence cannot break the line alignment."""
    path = check_readable(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise UserError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
            f"convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    return [line.removesuffix("\r") for line in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> ParallelCorpus:
    """Read a line-aligned pair of files; pairs with an empty side are skipped and counted."""
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        shorter = min(len(src_lines), len(tgt_lines))
        raise UserError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}: "
            f"the files must be line-aligned (line {shorter + 1} has no partner)"
        )
    corpus = ParallelCorpus([], [], [])
    for number, (s, t) in enumerate(zip(src_lines, tgt_lines), start=1):
        corpus.add(number, s.strip(), t.strip())
    return corpus


def read_text(path: str | Path) -> ParallelCorpus:
    """Plain text for a language model, one example per line (in ``tgt``); empty lines are skipped and counted."""
    corpus = ParallelCorpus([], [], [])
    for number, line in enumerate(read_lines(path), start=1):
        corpus.add(number, None, line.strip())
    return corpus


def read_labeled(path: str | Path) -> ParallelCorpus:
    """``label<TAB>text`` lines for a classifier: text in ``src``, label in ``tgt``."""
    corpus = ParallelCorpus([], [], [])
    for number, line in enumerate(read_lines(path), start=1):
        label, tab, text = line.partition("\t")
        if line.strip() and (not tab or not label.strip() or not text.strip()):
            raise UserError(f"{path}:{number}: expected 'label<TAB>text', got {line[:60]!r}; "
                            "separate the label from the text with one tab")
        corpus.add(number, text.strip(), label.strip())
    return corpus
