"""Built-in synthetic translation tasks, so everything runs with no downloads.

As in JoeyNMT's reverse task: a "sentence" is a sequence of random symbols and the
"translation" is a deterministic function of it.

* ``copy``: the target repeats the source;
* ``reverse``: the target is the source backwards (the first source word is the last target
  word, so the decoder must look far back: the lecture's "the farther, the more forgotten");
* ``sort``: the target lists the source symbols in vocabulary order.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from seqlab.errors import UserError

TASKS = ("reverse", "copy", "sort")
_ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits


def symbols(vocab_size: int) -> list[str]:
    """``vocab_size`` distinct one-word symbols: a–z, A–Z, 0–9, then w62, w63, …"""
    return [_ALPHABET[i] if i < len(_ALPHABET) else f"w{i}" for i in range(vocab_size)]


def transform(task: str, tokens: list[str], vocab: list[str]) -> list[str]:
    if task == "copy":
        return list(tokens)
    if task == "reverse":
        return tokens[::-1]
    if task == "sort":
        rank = {s: i for i, s in enumerate(vocab)}
        return sorted(tokens, key=rank.__getitem__)
    raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def make_pairs(task: str, n: int, vocab_size: int, min_len: int, max_len: int, rng: random.Random) -> list[tuple[str, str]]:
    vocab = symbols(vocab_size)
    pairs = []
    for _ in range(n):
        tokens = [rng.choice(vocab) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((" ".join(tokens), " ".join(transform(task, tokens, vocab))))
    return pairs


def write_synthetic(
    task: str,
    out_dir: str | Path,
    vocab_size: int = 30,
    min_len: int = 10,
    max_len: int = 30,
    train_size: int = 20000,
    dev_size: int = 500,
    test_size: int = 500,
    seed: int = 1,
) -> dict[str, int]:
    """Write ``{train,dev,test}.{src,tgt}`` under ``out_dir``; returns the number of pairs per split."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    for name, value in [("--vocab-size", vocab_size), ("--min-len", min_len), ("--max-len", max_len),
                        ("--train-size", train_size), ("--dev-size", dev_size), ("--test-size", test_size)]:
        if value < 1:
            raise UserError(f"{name} must be at least 1 (got {value})")
    if min_len > max_len:
        raise UserError(f"--min-len ({min_len}) is larger than --max-len ({max_len})")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    rng = random.Random(seed)
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    splits = {name: make_pairs(task, n, vocab_size, min_len, max_len, rng) for name, n in sizes.items()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, pairs in splits.items():
            for side, column in (("src", 0), ("tgt", 1)):
                (out / f"{name}.{side}").write_text("".join(p[column] + "\n" for p in pairs), encoding="utf-8")
    except OSError as err:
        raise UserError(f"{out}: cannot write the data ({err.strerror}); choose a writable --out") from None
    return sizes
