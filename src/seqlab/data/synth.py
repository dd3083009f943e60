"""Built-in synthetic translation tasks, so everything runs with no downloads.

As in JoeyNMT's reverse task: a "sentence" is a sequence of random symbols and the
"translation" is a deterministic function of it.

* ``copy``: the target repeats the source;
* ``reverse``: the target is the source backwards (the first source word is the last target
  word, so the decoder must look far back: the lecture's "the farther, the more forgotten");
* ``sort``: the target lists the source symbols in vocabulary order.

and, for the other model kinds, a small synthetic language (a grammar with number agreement:
"the happy cats follow a dog .", "a child sees the cold birds ."):

* ``lm``: its sentences, ``{train,dev,test}.txt``, for language models;
* ``sentiment``: ``label<TAB>sentence`` lines, ``{train,dev,test}.tsv``, for a many-to-one
  classifier: ``pos`` when the sentence has more happy adjectives than sad ones, else ``neg``,
  so the label depends on words anywhere in the sentence;
* ``spell``: one-to-many: a number 0–9999 as one vector (one-hot digits, 40 numbers) → its
  English words ("four thousand two hundred seven").
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from seqlab.errors import UserError

TASKS = ("reverse", "copy", "sort", "lm", "sentiment", "spell")
PARALLEL_TASKS = ("reverse", "copy", "sort")
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


POSITIVE = ["good", "happy", "bright", "kind", "warm"]
NEGATIVE = ["bad", "sad", "dark", "cruel", "cold"]
NOUNS = {"cat": "cats", "dog": "dogs", "bird": "birds", "child": "children", "teacher": "teachers",
         "farmer": "farmers"}
VERBS = {"sees": "see", "likes": "like", "follows": "follow", "helps": "help", "finds": "find"}


def noun_phrase(rng: random.Random, adjectives: list[str]) -> tuple[list[str], bool]:
    """"the happy cats" or "a dog": determiner, up to two adjectives, singular or plural noun."""
    plural = rng.random() < 0.4
    noun = rng.choice(list(NOUNS))
    det = rng.choice(["the", "some"] if plural else ["the", "a"])
    adjs = [rng.choice(POSITIVE + NEGATIVE) for _ in range(rng.choice([0, 0, 1, 1, 2]))]
    adjectives.extend(adjs)
    return [det, *adjs, NOUNS[noun] if plural else noun], plural


def sentence(rng: random.Random) -> tuple[str, list[str]]:
    """Subject, verb agreeing with the subject's number, object, optionally "and" another object."""
    adjectives: list[str] = []
    subject, plural = noun_phrase(rng, adjectives)
    verb = rng.choice(list(VERBS))
    words = subject + [VERBS[verb] if plural else verb] + noun_phrase(rng, adjectives)[0]
    if rng.random() < 0.3:
        words += ["and"] + noun_phrase(rng, adjectives)[0]
    return " ".join(words + ["."]), adjectives


def sentiment_example(rng: random.Random) -> str:
    while True:
        text, adjectives = sentence(rng)
        score = sum(a in POSITIVE for a in adjectives) - sum(a in NEGATIVE for a in adjectives)
        if score:
            return f"{'pos' if score > 0 else 'neg'}\t{text}"


ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
       "seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell(n: int) -> str:
    """English words for 0 ≤ n ≤ 9999: 4207 → "four thousand two hundred seven"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + spell(n % 100))
    return ONES[n // 1000] + " thousand" + ("" if n % 1000 == 0 else " " + spell(n % 1000))


def digits_vector(n: int) -> str:
    """n as one vector: four one-hot blocks of 10 (thousands, hundreds, tens, units)."""
    values = []
    for d in f"{n:04d}":
        values += ["1" if i == int(d) else "0" for i in range(10)]
    return " ".join(values)


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
    files: dict[str, list[str]] = {}
    for name, n in sizes.items():
        if task in PARALLEL_TASKS:
            pairs = make_pairs(task, n, vocab_size, min_len, max_len, rng)
            files[f"{name}.src"], files[f"{name}.tgt"] = [p[0] for p in pairs], [p[1] for p in pairs]
        elif task == "lm":
            files[f"{name}.txt"] = [sentence(rng)[0] for _ in range(n)]
        elif task == "sentiment":
            files[f"{name}.tsv"] = [sentiment_example(rng) for _ in range(n)]
        else:  # spell
            numbers = [rng.randrange(10000) for _ in range(n)]
            files[f"{name}.src"], files[f"{name}.tgt"] = [digits_vector(k) for k in numbers], [spell(k) for k in numbers]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for filename, lines in files.items():
            (out / filename).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    except OSError as err:
        raise UserError(f"{out}: cannot write the data ({err.strerror}); choose a writable --out") from None
    return sizes
