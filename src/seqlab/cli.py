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
experiment_app = typer.Typer(no_args_is_help=True, help="The lecture, measured: train, measure and draw.")
app.add_typer(experiment_app, name="experiment")


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, e.g. 5,10,20 (got {text!r})") from None


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _decode_config(base, beam: Optional[int], length_penalty: Optional[float], max_len_ratio: Optional[float],
                   batch_size: Optional[int]):
    """The checkpoint's decode settings with command-line values on top (validated by pydantic)."""
    from pydantic import ValidationError

    from seqlab.config import DecodeConfig

    changes = {"beam_size": beam, "length_penalty": length_penalty, "max_len_ratio": max_len_ratio,
               "batch_size": batch_size}
    flags = {"beam_size": "--beam", "length_penalty": "--length-penalty", "max_len_ratio": "--max-len-ratio",
             "batch_size": "--batch-size"}
    try:
        return DecodeConfig(**{**base.model_dump(), **{k: v for k, v in changes.items() if v is not None}})
    except ValidationError as err:
        key = err.errors()[0]["loc"][0]
        raise UserError(f"{flags.get(key, key)}: {err.errors()[0]['msg']}") from None


def _precision_list(precision: str) -> list[str]:
    """``--precision fp32`` or a comma-separated list; with several, fp32 comes first, the reference."""
    modes = list(dict.fromkeys(p.strip() for p in precision.split(",") if p.strip()))
    for mode in modes or [precision]:
        if mode not in ("fp32", "bf16", "int8"):
            raise UserError(f"--precision {mode!r}: choose fp32, bf16 or int8 (or several, comma-separated)")
    if len(modes) > 1:
        modes = ["fp32"] + [m for m in modes if m != "fp32"]
    return modes


def _inference_setup(device: str, precision: str, threads: Optional[int]):
    """Validate --device/--precision/--threads; returns the torch device."""
    import torch

    from seqlab.hardware import precision_warning
    from seqlab.runs import pick_device

    if precision not in ("fp32", "bf16", "int8"):
        raise UserError(f"--precision {precision!r}: choose fp32, bf16 or int8")
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1 (got {threads})")
        torch.set_num_threads(threads)
    dev = pick_device(device)
    if precision == "int8" and dev.type != "cpu":
        raise UserError("--precision int8 (dynamic quantization) runs on the CPU: add --device cpu")
    warning = precision_warning(dev, precision)
    if warning:
        typer.echo(f"seqlab: warning: {warning}", err=True)
    return dev


def _compile_warning(compile: bool, dev, precisions: list[str]) -> None:
    """--compile changes only bf16 decoding on the CPU (int8 there runs in bf16 around its products)."""
    if compile and (dev.type != "cpu" or set(precisions) == {"fp32"}):
        typer.echo("seqlab: warning: --compile speeds up bf16 and int8 decoding on the CPU only; "
                   f"{'/'.join(precisions)} on {dev.type} decodes as without it", err=True)


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


# translate and evaluate decode the same way
THREADS_OPTION = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice).")
COMPILE_OPTION = typer.Option(False, "--compile", help="Greedy and beam decoding steps compiled whole by "
                              "torch.compile (bf16/int8 on CPU; the first steps wait seconds for the compilation, "
                              "so for large inputs).")


@app.command()
def translate(
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory (uses its best checkpoint) or checkpoint file."),
    input: Optional[Path] = typer.Option(None, "--input", "-i",
                                         help="Source text, one sentence per line (default: stdin)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write translations (default: stdout)."),
    beam: Optional[int] = typer.Option(None, "--beam",
                                       help="Beam size; 1 = greedy (default: the checkpoint's decode.beam_size)."),
    nbest: int = typer.Option(1, "--nbest", help="Write the N best hypotheses as 'i ||| text ||| score'."),
    length_penalty: Optional[float] = typer.Option(None, "--length-penalty", help="α of Wu et al. 2016."),
    max_len_ratio: Optional[float] = typer.Option(None, "--max-len-ratio", help="Output ≤ ratio · source length + extra."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sentences decoded at once."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (fast on AMX CPUs, AMD's AVX512-BF16 "
                                                              "and GPUs; warned where measured slow) or int8 "
                                                              "(dynamic quantization, CPU)."),
    threads: Optional[int] = THREADS_OPTION,
    compile: bool = COMPILE_OPTION,
):
    """Translate text with a trained model (or label it, with a classifier); one output line per input line."""
    from seqlab.data.reader import read_lines
    from seqlab.evaluation import translate_lines
    from seqlab.runs import for_inference, load_model

    if nbest < 1:
        raise UserError(f"--nbest must be at least 1 (got {nbest})")
    dev = _inference_setup(device, precision, threads)
    _compile_warning(compile, dev, [precision])
    loaded = load_model(ckpt, dev)
    decode = _decode_config(loaded.config.decode, beam, length_penalty, max_len_ratio, batch_size)
    if loaded.codec.task == "lm":
        raise UserError(f"{ckpt}: a {loaded.config.model.kind} language model has no source to translate; "
                        "use seqlab generate --ckpt RUN --prompt TEXT")
    if nbest > decode.beam_size:
        raise UserError(f"--nbest {nbest} is larger than the beam ({decode.beam_size}); raise --beam")
    lines = read_lines(input) if input is not None else sys.stdin.read().splitlines()
    loaded.model = for_inference(loaded.model, precision, compile)  # the decoding copy replaces the loaded weights
    results = translate_lines(loaded.model, loaded.codec, lines, decode, dev, nbest=nbest, precision=precision)
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
    src: Optional[Path] = typer.Option(None, "--src", help="Source sentences (translation, vector_to_seq)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference translations, line-aligned with --src."),
    text: Optional[Path] = typer.Option(None, "--text", help="Plain text (language models) or label<TAB>text lines "
                                                             "(classifiers)."),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size (default: the checkpoint's decode.beam_size)."),
    show: int = typer.Option(5, "--show", help="Print this many examples."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores to this JSON file."),
    hyp_out: Optional[Path] = typer.Option(None, "--hyp", help="Also write the outputs to this file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or int8 (see seqlab translate --help); "
                                                              "several, comma-separated (fp32,bf16,int8), score each "
                                                              "mode and print it beside fp32."),
    threads: Optional[int] = THREADS_OPTION,
    compile: bool = COMPILE_OPTION,
):
    """Score a model on a test set: PPL; BLEU (with n-gram precisions and BP), chrF, exact match; or accuracy."""
    from seqlab.config import DataFiles
    from seqlab.data.tasks import read_split
    from seqlab.evaluation import evaluate as run_evaluation
    from seqlab.evaluation import precision_table
    from seqlab.runs import for_inference, load_model

    precisions = _precision_list(precision)
    if len(precisions) > 1 and hyp_out is not None:
        raise UserError(f"--hyp writes the outputs of one precision: give a single --precision (not {precision!r})")
    for mode in precisions:
        dev = _inference_setup(device, mode, threads)
    _compile_warning(compile, dev, precisions)
    loaded = load_model(ckpt, dev)
    kind, task = loaded.config.model.kind, loaded.codec.task
    if task in ("lm", "classify"):
        if text is None or src or ref:
            raise UserError(f"a {kind} model is evaluated on --text FILE "
                            f"({'label<TAB>text lines' if task == 'classify' else 'plain text'}), not --src/--ref")
        files, name = DataFiles(text=text), str(text)
    else:
        if src is None or ref is None or text:
            raise UserError(f"a {kind} model is evaluated on --src FILE --ref FILE")
        files, name = DataFiles(src=src, tgt=ref), str(src)
    corpus = read_split(kind, files)
    if not corpus.tgt:
        raise UserError(f"{name}: nothing to evaluate")
    decode = _decode_config(loaded.config.decode, beam, None, None, None)
    results = {}
    for mode in precisions:  # each a decoding copy of the loaded weights, made when its turn comes
        model = for_inference(loaded.model, mode, compile)
        if len(precisions) == 1:
            loaded.model = None  # the decoding copy replaces the loaded weights
        results[mode] = run_evaluation(model, loaded.codec, corpus, decode, dev, beam_size=decode.beam_size,
                                       name=name, precision=mode)
        del model
    result = results[precisions[0]]
    step = loaded.meta.get("state", {}).get("step", "?")
    echo = typer.echo
    echo(f"{corpus.report.summary(name)}; checkpoint {loaded.path} (step {step})"
         + (f"; beam {decode.beam_size}" if result.scores is not None else "") + f"; {', '.join(precisions)}")
    if result.ppl is not None:
        echo(f"PPL    {result.ppl:10.3f}   (exp of the mean cross-entropy, {result.loss:.4f} nats "
             f"over {result.n_targets:,} target tokens)")
    if result.scores is not None:
        s = result.scores
        echo(f"BLEU   {s.bleu:10.2f}   n-gram precisions {'/'.join(f'{p:.1f}' for p in s.precisions)}, "
             f"BP {s.brevity_penalty:.3f}, hyp/ref length {s.sys_len}/{s.ref_len}")
        echo(f"chrF   {s.chrf:10.2f}")
        echo(f"exact  {s.exact_match:9.2f}%   hypotheses identical to the reference")
        echo(f"sacreBLEU signatures: BLEU {s.bleu_signature} | chrF {s.chrf_signature}")
    if task == "classify":
        if result.accuracy is not None:
            echo(f"accuracy {result.accuracy:8.2f}%   over {result.n_targets:,} examples "
                 f"(cross-entropy {result.loss:.4f})")
        else:
            echo(f"MSE    {result.loss:10.4f}   over {result.n_targets:,} examples")
    if len(results) > 1:
        echo("\n" + precision_table(results, len(corpus.tgt)))
        if compile:
            echo("(--compile: the times include torch.compile's compiling, seconds once per process and shape)")
    if result.hypotheses is not None:
        inputs = corpus.src
        if len(results) > 1 and show:
            echo(f"\nexamples ({precisions[0]}):")
        for i in range(min(show, len(inputs))):
            mark = "✓" if result.hypotheses[i].strip() == corpus.tgt[i].strip() else "✗"
            echo(f"\n[{i + 1}] {mark}\n  src: {inputs[i]}\n  ref: {corpus.tgt[i]}\n  hyp: {result.hypotheses[i]}")
    if json_out is not None:
        payload = {"loss": result.loss, "n_targets": result.n_targets, "ppl": result.ppl, "accuracy": result.accuracy,
                   "checkpoint": str(loaded.path), "step": step, "beam_size": decode.beam_size,
                   "precision": precisions[0], "seconds": result.seconds,
                   **(result.scores.as_dict() if result.scores is not None else {})}
        if len(results) > 1:
            payload["by_precision"] = {mode: {"loss": r.loss, "ppl": r.ppl, "accuracy": r.accuracy, "seconds": r.seconds,
                                              **(r.scores.as_dict() if r.scores is not None else {})}
                                       for mode, r in results.items()}
        _write_text_atomically(json_out, json.dumps(payload, indent=2) + "\n")
    if hyp_out is not None and result.hypotheses is not None:
        _write_text_atomically(hyp_out, "".join(h + "\n" for h in result.hypotheses))


@app.command()
def generate(
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory or checkpoint file of a language model."),
    prompt: str = typer.Option("", "--prompt", help="Text to continue (empty: start from <bos>)."),
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", help="Tokens to generate at most."),
    temperature: float = typer.Option(1.0, "--temperature", help="0 = greedy; below 1 sharper, above 1 flatter."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample only among the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample only within the top-p nucleus (0 < p ≤ 1)."),
    num_samples: int = typer.Option(1, "--num-samples", "-n", help="Continuations to write."),
    seed: int = typer.Option(0, "--seed", help="The same seed gives the same text."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
):
    """Continue a prompt with a language model (gpt, rnn_lm): greedy, temperature, top-k or top-p sampling."""
    from seqlab.decoding.sampling import generate as sample
    from seqlab.runs import load_model, pick_device

    for flag, value, ok in (("--max-new-tokens", max_new_tokens, max_new_tokens >= 1),
                            ("--temperature", temperature, temperature >= 0),
                            ("--top-k", top_k, top_k is None or top_k >= 1),
                            ("--top-p", top_p, top_p is None or 0 < top_p <= 1),
                            ("--num-samples", num_samples, num_samples >= 1)):
        if not ok:
            raise UserError(f"{flag} {value} is out of range; see seqlab generate --help")
    loaded = load_model(ckpt, pick_device(device))
    if loaded.codec.task != "lm":
        raise UserError(f"{ckpt}: generate needs a language model (model.kind gpt or rnn_lm), this is "
                        f"{loaded.config.model.kind}; use seqlab translate")
    ids = loaded.tgt_tok.encode(prompt) if prompt else []
    for new in sample(loaded.model, ids, max_new_tokens, temperature, top_k, top_p, seed, num_samples=num_samples):
        typer.echo(loaded.tgt_tok.decode(ids + new))


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
    outputs = 2 if cfg.model.kind == "classifier" else V  # a classifier's outputs: its labels (2 assumed here)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = build_model(cfg.model, V, outputs)
    options = ", ".join(f"{k} {v}" for k, v in cfg.model.model_dump().items() if k != "kind")
    typer.echo(f"{cfg.model.kind}: {options}; vocabulary {V:,} "
               f"({'joint' if cfg.tokenizer.joint else 'separate'})")
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        groups[top] = groups.get(top, 0) + p.numel()
    for name, n in groups.items():
        typer.echo(f"  {name:<16} {n:>14,}")
    typer.echo(f"  {'total':<16} {count_parameters(model):>14,} parameters")


@data_app.command("synth")
def data_synth(
    task: str = typer.Option(..., "--task", help="reverse, copy, sort (translation); lm (plain text); sentiment "
                                                 "(label<TAB>text); spell (number vector → words)."),
    out: Path = typer.Option(..., "--out", help="Directory for the train/dev/test files."),
    vocab_size: int = typer.Option(30, "--vocab-size", help="Number of distinct symbols."),
    min_len: int = typer.Option(10, "--min-len"),
    max_len: int = typer.Option(30, "--max-len"),
    train_size: int = typer.Option(20000, "--train-size"),
    dev_size: int = typer.Option(500, "--dev-size"),
    test_size: int = typer.Option(500, "--test-size"),
    seed: int = typer.Option(1, "--seed"),
):
    """Write a built-in data set: JoeyNMT-style reverse/copy/sort, a small synthetic language, or number spelling.

    --vocab-size, --min-len and --max-len shape the reverse/copy/sort tasks only.
    """
    from seqlab.data.synth import write_synthetic

    sizes = write_synthetic(task, out, vocab_size, min_len, max_len, train_size, dev_size, test_size, seed)
    typer.echo(f"wrote {task} task to {out}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), err=True)


@experiment_app.command("long-range")
def experiment_long_range(
    tasks: str = typer.Option("copy,reverse", "--tasks", help="Comma-separated: copy, reverse."),
    lengths: str = typer.Option("5,10,20,40,80", "--lengths", help="Sequence lengths L, comma-separated."),
    models: str = typer.Option("rnn,lstm,gru,lstm+attention,transformer", "--models",
                               help="Comma-separated: rnn, lstm, gru, lstm+attention, transformer."),
    steps: int = typer.Option(3000, "--steps", help="Training steps per run (budget)."),
    minutes: float = typer.Option(1.0, "--minutes", help="Training minutes per run (budget)."),
    train_size: int = typer.Option(10000, "--train-size", help="Training pairs per task and length."),
    seed: int = typer.Option(1, "--seed"),
    out: Path = typer.Option(Path("runs/experiments/long-range"), "--out", help="Directory for runs, CSV and PNG."),
):
    """Exact match against sequence length and token accuracy against position, for RNNs and the Transformer."""
    from seqlab.analysis.long_range import LongRangeSettings, format_table, run_long_range

    if steps < 1 or minutes <= 0 or train_size < 1:
        raise UserError("--steps, --minutes and --train-size must be positive")
    settings = LongRangeSettings(tasks=[t.strip() for t in tasks.split(",") if t.strip()],
                                 lengths=_int_list(lengths, "--lengths"),
                                 models=[m.strip() for m in models.split(",") if m.strip()],
                                 steps=steps, minutes=minutes, train_size=train_size, seed=seed)
    rows = run_long_range(settings, out, log=_log)
    typer.echo("Exact match on the test set (greedy), by task and sequence length:\n" + format_table(rows))
    typer.echo(f"\nwrote {out}/results.csv, positions.csv, exact_vs_length.png, accuracy_vs_position.png", err=True)


@experiment_app.command("gradients")
def experiment_gradients(
    models: str = typer.Option("rnn,lstm,gru,transformer", "--models", help="Comma-separated: rnn, lstm, gru, transformer."),
    length: int = typer.Option(40, "--length", help="T: the step whose loss is differentiated and whose state is probed."),
    steps: int = typer.Option(1500, "--steps", help="Training steps per model (budget)."),
    minutes: float = typer.Option(1.0, "--minutes", help="Training minutes per model (budget)."),
    train_size: int = typer.Option(4000, "--train-size", help="Training lines of the synthetic language."),
    probe_size: int = typer.Option(2000, "--probe-size", help="Random sequences for the linear probe."),
    seed: int = typer.Option(1, "--seed"),
    out: Path = typer.Option(Path("runs/experiments/gradients"), "--out", help="Directory for runs, CSV and PNG."),
):
    """‖∂L_T/∂x_t‖ against distance (vanishing gradients) and a linear probe of h_T (blurring), fresh and trained."""
    from seqlab.analysis.gradients import GradientSettings, run_gradients

    if min(steps, train_size, probe_size) < 1 or minutes <= 0 or probe_size < 8:
        raise UserError("--steps, --minutes, --train-size must be positive and --probe-size at least 8")
    settings = GradientSettings(models=[m.strip() for m in models.split(",") if m.strip()], length=length,
                                steps=steps, minutes=minutes, train_size=train_size, probe_size=probe_size, seed=seed)
    run_gradients(settings, out, log=_log)
    typer.echo(f"wrote {out}/gradients.csv, probe.csv, gradient_vs_distance.png, probe_vs_distance.png")


@experiment_app.command("length-buckets")
def experiment_length_buckets(
    ckpt: list[Path] = typer.Option(..., "--ckpt", help="Run directory or checkpoint; repeat for each model."),
    src: Path = typer.Option(..., "--src", help="Source sentences."),
    ref: Path = typer.Option(..., "--ref", help="References, line-aligned with --src."),
    width: int = typer.Option(10, "--width", help="Bucket width in source words."),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size (default: each checkpoint's decode.beam_size)."),
    out: Path = typer.Option(Path("runs/experiments/length-buckets"), "--out", help="Directory for CSV and PNG."),
):
    """BLEU by source-length bucket for several models (Bahdanau et al. 2015, Figure 2)."""
    from seqlab.analysis.length_buckets import run_length_buckets

    if beam is not None and beam < 1:
        raise UserError(f"--beam must be at least 1 (got {beam})")
    names = [c.name if c.is_dir() else c.parent.name for c in ckpt]
    if len(set(names)) < len(names):
        names = [f"{i + 1}-{n}" for i, n in enumerate(names)]
    rows = run_length_buckets(ckpt, src, ref, out, width, beam, names, log=_log)
    buckets = list(dict.fromkeys(r["bucket"] for r in rows))
    typer.echo(f"{'model':<24}" + "".join(f"{b:>9}" for b in buckets))
    for name in names:
        cells = {r["bucket"]: r["bleu"] for r in rows if r["model"] == name}
        typer.echo(f"{name:<24}" + "".join(f"{cells[b]:>9.1f}" if b in cells else f"{'-':>9}" for b in buckets))
    typer.echo(f"wrote {out}/length_buckets.csv and bleu_vs_length.png", err=True)


@app.command()
def attention(
    sentence: str = typer.Argument(..., help="The sentence to translate (or, for GPT, to read)."),
    ckpt: Path = typer.Option(..., "--ckpt", help="Run directory or checkpoint of a transformer, gpt or "
                                                  "rnn_seq2seq-with-attention model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the PNGs (default: RUN/attention)."),
    beam: int = typer.Option(1, "--beam", help="Beam size for the translation whose maps are drawn."),
):
    """Heatmaps of every attention layer and head (grid + one PNG per head), tokens on the axes."""
    from seqlab.analysis.attention_maps import attention_maps, draw_attention
    from seqlab.runs import load_model

    if beam < 1:
        raise UserError(f"--beam must be at least 1 (got {beam})")
    if not sentence.strip():
        raise UserError("give a non-empty sentence")
    loaded = load_model(ckpt)
    maps, labels = attention_maps(loaded, sentence, beam)
    target = out or loaded.path.parent / "attention"
    paths = draw_attention(maps, labels, target, sentence)
    typer.echo(f"wrote {len(paths)} PNGs to {target} (grid: {paths[0]})")


@app.command()
def average(
    ckpt: list[Path] = typer.Option(..., "--ckpt", help="Checkpoint files to average, or one run directory "
                                                        "(with --last)."),
    last: Optional[int] = typer.Option(None, "--last", help="With a run directory: average its last K step "
                                                            "checkpoints (train.keep_last ≥ K)."),
    out: Path = typer.Option(..., "--out", help="The averaged checkpoint to write (a .safetensors file)."),
):
    """Average the weights of several checkpoints of one run (as fairseq's average_checkpoints.py)."""
    from seqlab.runs import load_model
    from seqlab.training.checkpoint import average_checkpoints, save_checkpoint

    if len(ckpt) == 1 and ckpt[0].is_dir():
        if last is None or last < 1:
            raise UserError("--ckpt RUN_DIR needs --last K (K ≥ 1): how many of its last step checkpoints to average")
        found = sorted(ckpt[0].glob("checkpoint_[0-9]*.safetensors"))
        if len(found) < last:
            raise UserError(f"{ckpt[0]}: {len(found)} step checkpoints, fewer than --last {last}; "
                            "train with train.keep_last ≥ K, or list the files with --ckpt")
        paths = found[-last:]
    else:
        if last is not None:
            raise UserError("--last goes with one run directory; with checkpoint files, list each with --ckpt")
        paths = ckpt
    if out.exists() and out.is_dir():
        raise UserError(f"{out}: is a directory; give the .safetensors file to write")
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the averaged checkpoint must end in .safetensors (its tokenizers are found beside it)")
    if out.resolve().parent != paths[-1].resolve().parent:
        raise UserError(f"{out}: write the average into the run directory {paths[-1].parent}, beside the tokenizers "
                        "it needs")
    averaged, meta = average_checkpoints(paths)
    loaded = load_model(paths[-1])  # the model of the newest checkpoint, to receive the averaged weights
    loaded.model.load_state_dict(averaged)
    meta = {k: v for k, v in meta.items() if k not in ("optimizer", "rng", "aliases", "format")}
    save_checkpoint(out, loaded.model, dict(meta, averaged=[str(p) for p in paths]))
    typer.echo(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {out}")


@app.command()
def report(
    directory: Path = typer.Argument(..., help="A run directory or an experiment's --out directory."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default: DIR/report.html)."),
):
    """One self-contained HTML page with the configuration, curves, examples, attention maps and tables."""
    from seqlab.analysis.report import write_report

    typer.echo(f"wrote {write_report(directory, out)}")


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
        sys.exit(getattr(err, "exit_code", 2))  # 2, or 128 + signal for a run stopped by SIGINT/SIGTERM
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
