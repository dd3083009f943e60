"""The ``seqlab`` command: a thin layer that parses, validates and calls the library.

Mistakes a user can fix are reported as one line on stderr with exit status 2; add ``--debug``
anywhere on the command line for the full traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from seqlab.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, decode, evaluate and explain sequence models.")
data_app = typer.Typer(no_args_is_help=True, help="Built-in data sets.")
app.add_typer(data_app, name="data")


def _decode_config(base, beam: Optional[int], length_penalty: Optional[float], max_len_ratio: Optional[float],
                   batch_size: Optional[int]):
    """The checkpoint's decode settings with command-line values on top (validated by pydantic)."""
    from pydantic import ValidationError

    from seqlab.config import DecodeConfig, describe_validation_error

    changes = {"beam_size": beam, "length_penalty": length_penalty, "max_len_ratio": max_len_ratio,
               "batch_size": batch_size}
    flags = {"beam_size": "--beam", "length_penalty": "--length-penalty", "max_len_ratio": "--max-len-ratio",
             "batch_size": "--batch-size"}
    try:
        return DecodeConfig(**{**base.model_dump(), **{k: v for k, v in changes.items() if v is not None}})
    except ValidationError as err:
        key = err.errors()[0]["loc"][0]
        raise UserError(f"{flags.get(key, key)}: {err.errors()[0]['msg']}") from None


def _write_text_atomically(path: Path, text: str) -> None:
    from seqlab.training.checkpoint import atomic_write_bytes

    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file name for --output")
    if not path.parent.exists():
        raise UserError(f"{path}: directory {path.parent} does not exist")
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err.strerror})") from None


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config (see configs/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.max_steps=2000."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in run_dir from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or log lines on the terminal."),
):
    """Train a model on the parallel text named in CONFIG."""
    from seqlab.config import load_config
    from seqlab.training.trainer import train as run_training

    cfg = load_config(config, set_)
    result = run_training(cfg, resume=resume, progress=not quiet)
    typer.echo(f"run saved in {result.run_dir} ({result.stop_reason})", err=True)


@app.command()
def translate(
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory (uses its best checkpoint) or checkpoint file."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Source text, one sentence per line [stdin]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write translations [stdout]."),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size; 1 = greedy [checkpoint's decode.beam_size]."),
    nbest: int = typer.Option(1, "--nbest", help="Write the N best hypotheses as 'i ||| text ||| score'."),
    length_penalty: Optional[float] = typer.Option(None, "--length-penalty", help="α of Wu et al. 2016."),
    max_len_ratio: Optional[float] = typer.Option(None, "--max-len-ratio", help="Output ≤ ratio · source length + extra."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sentences decoded at once."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
):
    """Translate text with a trained model."""
    from seqlab.data.reader import read_lines
    from seqlab.evaluation import translate_lines
    from seqlab.runs import load_model, pick_device

    if nbest < 1:
        raise UserError(f"--nbest must be at least 1 (got {nbest})")
    dev = pick_device(device)
    loaded = load_model(ckpt, dev)
    decode = _decode_config(loaded.config.decode, beam, length_penalty, max_len_ratio, batch_size)
    if nbest > decode.beam_size:
        raise UserError(f"--nbest {nbest} is larger than the beam ({decode.beam_size}); raise --beam")
    lines = read_lines(input) if input is not None else sys.stdin.read().splitlines()
    results = translate_lines(loaded.model, loaded.src_tok, loaded.tgt_tok, lines, decode, dev, nbest=nbest)
    if nbest == 1:
        text = "".join((hs[0][0] if hs else "") + "\n" for hs in results)
    else:
        text = "".join(f"{i} ||| {t} ||| {s:.4f}\n" for i, hs in enumerate(results) for t, s in hs)
    if output is None:
        sys.stdout.write(text)
    else:
        _write_text_atomically(output, text)


@app.command()
def evaluate(
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory or checkpoint file."),
    src: Path = typer.Option(..., "--src", help="Source sentences."),
    ref: Path = typer.Option(..., "--ref", help="Reference translations, line-aligned with --src."),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size [checkpoint's decode.beam_size]."),
    show: int = typer.Option(5, "--show", help="Print this many example translations."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores to this JSON file."),
    hyp_out: Optional[Path] = typer.Option(None, "--hyp", help="Also write the translations to this file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
):
    """Score a model on a test set: PPL, BLEU (with n-gram precisions and BP), chrF, exact match."""
    from seqlab.data.reader import read_parallel
    from seqlab.evaluation import evaluate as run_evaluation
    from seqlab.runs import load_model, pick_device

    corpus = read_parallel(src, ref)
    if not corpus.src:
        raise UserError(f"{src}: no sentence pairs to evaluate")
    dev = pick_device(device)
    loaded = load_model(ckpt, dev)
    decode = _decode_config(loaded.config.decode, beam, None, None, None)
    result = run_evaluation(loaded.model, loaded.src_tok, loaded.tgt_tok, corpus.src, corpus.tgt, decode, dev)
    s = result.scores
    step = loaded.meta.get("state", {}).get("step", "?")
    echo = typer.echo
    echo(f"{corpus.report.summary(str(src))}; checkpoint {loaded.path} (step {step}); beam {decode.beam_size}")
    echo(f"PPL    {result.ppl:10.3f}   (exp of the mean cross-entropy, {result.nll_per_token:.4f} nats "
         f"over {result.n_tokens:,} target tokens)")
    echo(f"BLEU   {s.bleu:10.2f}   n-gram precisions {'/'.join(f'{p:.1f}' for p in s.precisions)}, "
         f"BP {s.brevity_penalty:.3f}, hyp/ref length {s.sys_len}/{s.ref_len}")
    echo(f"chrF   {s.chrf:10.2f}")
    echo(f"exact  {s.exact_match:9.2f}%   hypotheses identical to the reference")
    echo(f"sacreBLEU signatures: BLEU {s.bleu_signature} | chrF {s.chrf_signature}")
    for i in range(min(show, len(corpus.src))):
        mark = "✓" if result.hypotheses[i].strip() == corpus.tgt[i].strip() else "✗"
        echo(f"\n[{i + 1}] {mark}\n  src: {corpus.src[i]}\n  ref: {corpus.tgt[i]}\n  hyp: {result.hypotheses[i]}")
    if json_out is not None:
        payload = {"ppl": result.ppl, "nll_per_token": result.nll_per_token, "n_tokens": result.n_tokens,
                   "checkpoint": str(loaded.path), "step": step, "beam_size": decode.beam_size, **s.as_dict()}
        _write_text_atomically(json_out, json.dumps(payload, indent=2) + "\n")
    if hyp_out is not None:
        _write_text_atomically(hyp_out, "".join(h + "\n" for h in result.hypotheses))


@app.command()
def info(
    config: Path = typer.Argument(..., help="YAML config."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key."),
):
    """Print the model a config describes and its parameter count (vocabulary = tokenizer.vocab_size)."""
    import torch

    from seqlab.config import load_config
    from seqlab.models import build_model, count_parameters

    cfg = load_config(config, set_)
    V = cfg.tokenizer.vocab_size
    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(cfg.model, V, V)
    m = cfg.model
    typer.echo(f"{m.kind}: d_model {m.d_model}, {m.n_heads} heads, {m.n_encoder_layers}+{m.n_decoder_layers} layers, "
               f"FFN {m.d_ff}, {m.layer_norm}-LN, {m.positional} positions; vocabulary {V:,} "
               f"({'joint' if cfg.tokenizer.joint else 'separate'}), embeddings "
               f"{'shared' if m.share_embeddings else 'separate'}, output {'tied' if m.tie_output else 'untied'}")
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        groups[top] = groups.get(top, 0) + p.numel()
    for name, n in groups.items():
        typer.echo(f"  {name:<16} {n:>14,}")
    typer.echo(f"  {'total':<16} {count_parameters(model):>14,} parameters")


@data_app.command("synth")
def data_synth(
    task: str = typer.Option(..., "--task", help="reverse, copy or sort."),
    out: Path = typer.Option(..., "--out", help="Directory for train/dev/test .src/.tgt files."),
    vocab_size: int = typer.Option(30, "--vocab-size", help="Number of distinct symbols."),
    min_len: int = typer.Option(10, "--min-len"),
    max_len: int = typer.Option(30, "--max-len"),
    train_size: int = typer.Option(20000, "--train-size"),
    dev_size: int = typer.Option(500, "--dev-size"),
    test_size: int = typer.Option(500, "--test-size"),
    seed: int = typer.Option(1, "--seed"),
):
    """Write a synthetic parallel corpus (JoeyNMT-style reverse/copy/sort tasks)."""
    from seqlab.data.synth import write_synthetic

    sizes = write_synthetic(task, out, vocab_size, min_len, max_len, train_size, dev_size, test_size, seed)
    typer.echo(f"wrote {task} task to {out}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), err=True)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="seqlab")  # typer reports usage errors itself and exits
    except UserError as err:
        if debug:
            raise
        print(f"seqlab: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("seqlab: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as err:  # a bug, not bad input: say so, in one line unless --debug
        if debug:
            raise
        print(f"seqlab: internal error: {type(err).__name__}: {err} (run again with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)
