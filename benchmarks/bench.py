"""seqlab against the peers, side by side in one run: training and decoding speed, MFU, peak memory.

    python benchmarks/bench.py [--sizes tiny,small] [--steps 4] [--minutes 13.5] [--json benchmarks/last.json]
    (make bench installs the peers first: pip install -e '.[bench]')

Every training measurement runs in its own subprocess, so its peak RSS is its own; decoding runs
one subprocess per engine and precision, greedy search and then beam 5 (its peak RSS covers
both). Each records the share of the CPU time a hypervisor stole while it ran (/proc/stat), and
a share of 2% or more is printed when it ends, since it may have slowed the figures. Models are
built from random-init configurations of the same shape:

* tiny  = d_model 256, 3+3 layers, 4 heads, FFN 1024;  small = 512, 6+6, 8, 2048; dropout 0.1 on
  embeddings, sub-layer outputs and inside the FFN in all three;
* shared vocabulary of 8000, batches of 128 sentences × 32 tokens (4096 target tokens).

Training (target tokens/s of the fastest timed step, of up to 4 after two warm-up steps, fewer
once they have taken 15 s; the tiny models' steps in two processes each, 2 and 2, the second
round at the end of the run and in reverse order, when ``--minutes`` leaves time for it; Adam,
label smoothing 0.1): seqlab's Transformer, ``torch.nn.Transformer`` wrapped with embeddings and
a tied output layer, and Hugging Face ``MarianMTModel`` built from a ``MarianConfig``; fp32 and
bf16 autocast. MFU divides the FLOPs of one step (counted by ``torch.utils.flop_counter``) per
second by the fp32 / bf16 matrix-product peak measured at the start and again at the end of the
same run (the fastest of ``torch.mm`` and oneDNN's linear, at either end: one slow minute of a
shared VM once measured the float32 peak at 166 GFLOP/s where it reaches 306, and MFU above
100%). Decoding (generated tokens/s of the faster of 2 runs after a warm-up, 64 sentences of 32
tokens, up to 32 new tokens): seqlab's cached greedy and beam-5 search (fp32, bf16, int8, and
bf16 and int8 with ``--compile``, whose first, compiling run is reported), Hugging Face
``generate`` (fp32), and CTranslate2 (fp32, int8) running seqlab's own weights exported by
``seqlab.export.to_ctranslate2`` (greedy outputs compared token for token).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

SIZES = {"tiny": dict(d_model=256, layers=3, heads=4, ffn=1024), "small": dict(d_model=512, layers=6, heads=8, ffn=2048)}
VOCAB, BATCH, LENGTH = 8000, 128, 32
DECODE_BATCH, NEW_TOKENS = 64, 32
# Timed decoding runs: the fastest counts, of at least 2, at most DECODE_REPEATS, stopping once they
# total DECODE_TIMED_S. A tiny model's run lasts 0.2-1.5 s and a best of 2 of those moved by 20-50%
# between runs of the benchmark on a shared 2-core VM; a small model's run (0.7-7 s) gets 2-5 of them.
DECODE_REPEATS, DECODE_TIMED_S = 6, 3.0
BEAMS = (1, 5)  # greedy, then beam 5, in one process per engine
# Timed training steps stop at --steps, or earlier once they have taken this long (2 at least): where
# a step takes 10-14 s (small, bf16 products without AMX tiles) 2 of them, not 4.
TIMED_TRAIN_S = 15.0
# Training measurements per figure, the second round in reverse order (seqlab, torch, HF, then HF, torch,
# seqlab), the timed steps shared out between the rounds (2 each of --steps 4) and the fastest counting. A
# tiny step takes 1-2.5 s, so 4 timed steps in one process span 5-10 s, which one slow spell of a shared VM
# covers whole: once it put seqlab's tiny fp32 figure at 1.20x Marian's, 1.26x on an immediate rerun,
# against 1.42-2.08x in the ten runs before (benchmarks/RESULTS.md). A small measurement's steps span
# 15-30 s, and a second round of them would take another 5-6 min. Later rounds run at the end of the run,
# minutes after the first (a slow spell lasts minutes), and only while the run stays within --minutes.
TRAIN_ROUNDS = {"tiny": 2, "small": 1}
# The script's share of make bench's 15 minutes: the set-up takes up to 1.5 of them on a fresh machine.
BUDGET_MINUTES = 13.5


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of a square matrix product in ``dtype`` through each of PyTorch's CPU matrix libraries:
    ``torch.mm`` (MKL for float32, oneDNN for bfloat16) and oneDNN's linear layer, the fastest of
    ``repeats`` calls. MFU is taken against the faster library: MKL runs AVX2 kernels on AMD CPUs,
    oneDNN AVX-512 ones. (Averaged over the calls instead, a slow moment of a shared machine once
    put the float32 peak at 123 GFLOP/s where its calls reach 190, and MFU above 100%.)"""
    x = torch.randn(n, n, dtype=dtype)
    products = {"torch.mm": lambda: x @ x,
                "oneDNN": lambda: torch.ops.mkldnn._linear_pointwise(x, x, None, "none", [], "")}
    peaks = {}
    for name, product in products.items():
        for _ in range(2):
            product()
        best = float("inf")
        for _ in range(repeats):  # the fastest call: a noisy neighbour's slice only ever slows one
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        peaks[name] = 2 * n**3 / best
    return peaks


class TorchTransformerMT(nn.Module):
    """torch.nn.Transformer with token embeddings (× √d), sinusoidal positions and a tied output layer."""

    def __init__(self, d_model: int, layers: int, heads: int, ffn: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model, padding_idx=0)
        self.core = nn.Transformer(d_model, heads, layers, layers, ffn, dropout=0.1, batch_first=True)
        position = torch.arange(512)[:, None]
        inv = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(512, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * inv), torch.cos(position * inv)
        self.register_buffer("pe", pe, persistent=False)
        self.scale = math.sqrt(d_model)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        emb = lambda t: self.embed(t) * self.scale + self.pe[: t.size(1)]  # noqa: E731
        mask = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1))
        hidden = self.core(emb(src), emb(tgt_in), tgt_mask=mask, tgt_is_causal=True)
        return F.linear(hidden, self.embed.weight)


def build(impl: str, size: str) -> nn.Module:
    s = SIZES[size]
    torch.manual_seed(0)
    if impl == "seqlab":
        from seqlab.config import TransformerConfig
        from seqlab.models import build_model

        cfg = TransformerConfig(d_model=s["d_model"], n_heads=s["heads"], n_encoder_layers=s["layers"],
                                n_decoder_layers=s["layers"], d_ff=s["ffn"], dropout=0.1, max_positions=512)
        return build_model(cfg, VOCAB, VOCAB)
    if impl == "torch":
        return TorchTransformerMT(s["d_model"], s["layers"], s["heads"], s["ffn"])
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(vocab_size=VOCAB, d_model=s["d_model"], encoder_layers=s["layers"], decoder_layers=s["layers"],
                       encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
                       encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"], activation_function="relu",
                       dropout=0.1, attention_dropout=0.0, activation_dropout=0.1, max_position_embeddings=512,
                       pad_token_id=0, eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None,
                       scale_embedding=True, share_encoder_decoder_embeddings=True)
    return MarianMTModel(cfg)


def logits_of(impl: str, model: nn.Module, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    if impl == "hf":
        return model(input_ids=src, decoder_input_ids=tgt_in).logits
    return model(src, tgt_in)


def training_loss(impl: str, model: nn.Module, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor):
    """Mean label-smoothed (0.1) cross-entropy. seqlab's is its trainer's own (training/loss.py):
    the output layer folded into the loss, so the (tokens × vocabulary) logits never exist whole;
    the peers take F.cross_entropy of their logits, as their trainers do."""
    if impl == "seqlab":
        from seqlab.training.loss import output_cross_entropy

        hidden = model(src, tgt_in, features_only=True)
        return output_cross_entropy(hidden, model.output_weight(), tgt_out, label_smoothing=0.1) / tgt_out.numel()
    logits = logits_of(impl, model, src, tgt_in)
    return F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), label_smoothing=0.1)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (BATCH, LENGTH), generator=g)
    tgt = torch.randint(4, VOCAB, (BATCH, LENGTH), generator=g)
    return src, torch.cat([torch.full((BATCH, 1), 2), tgt[:, :-1]], 1), tgt


def train_worker(impl: str, size: str, precision: str, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    if impl == "seqlab":  # as `seqlab train` does (hardware.py): malloc keeps freed memory
        from seqlab.hardware import keep_freed_memory

        keep_freed_memory()
    model = build(impl, size).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=True)
    src, tgt_in, tgt_out = batch()
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = training_loss(impl, model, src, tgt_in, tgt_out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    step()  # a second one: without it seqlab's small fp32 steps measured 40% slower (still settling)
    times = []
    while len(times) < steps and (len(times) < 2 or sum(times) < TIMED_TRAIN_S):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = min(times)  # the best step: the shared machine's noise only ever slows a step
    return {"tok_s": tgt_out.numel() / seconds, "flops_per_step": counter.get_total_flops(), "s_per_step": seconds,
            "parameters": sum(p.numel() for p in model.parameters())}


def decode_worker(impl: str, size: str, precision: str, beams: list[int]) -> dict:
    """Generated tokens/s of each beam size in ``beams``, in turn in this one process: one model
    build, one export, one compilation, where a process per search paid each of them again (and
    2-6 s to import torch, transformers and build the model). Keyed by beam size."""
    model = build("seqlab" if impl == "ct2" else impl, size).eval()
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, VOCAB, (DECODE_BATCH, LENGTH), generator=g)
    if impl == "ct2":  # the seqlab model's own weights, exported
        import tempfile

        import ctranslate2

        from seqlab.export import ctranslate2_ids, ctranslate2_tokens, to_ctranslate2

        path = to_ctranslate2(model, tempfile.mkdtemp(), quantization="int8" if precision == "int8" else None)
        translator = ctranslate2.Translator(str(path), device="cpu", inter_threads=1,
                                            intra_threads=torch.get_num_threads())
        sources = [ctranslate2_tokens(row + [3]) for row in src.tolist()]

        def run():
            # CTranslate2 counts <eos> out of the cap, seqlab into it: both stop at NEW_TOKENS words
            results = translator.translate_batch(sources, beam_size=run.beam, max_decoding_length=NEW_TOKENS,
                                                 max_batch_size=DECODE_BATCH)
            run.outputs = [ctranslate2_ids(r.hypotheses[0]) for r in results]
            return sum(len(h) + 1 for h in run.outputs)
    elif impl == "seqlab":
        from seqlab.decoding.search import search
        from seqlab.hardware import autocast
        from seqlab.runs import for_inference

        compile = precision.endswith("+compile")  # torch.compile: greedy and beam steps whole
        precision = precision.removesuffix("+compile")
        model = for_inference(model, precision, compile=compile)
        src = torch.cat([src, torch.full((DECODE_BATCH, 1), 3)], 1)  # seqlab sources end in <eos>

        def run():
            with torch.no_grad(), autocast(torch.device("cpu"), "bf16" if precision == "bf16" else "fp32"):
                hyps = search(model, src, beam_size=run.beam, max_len_ratio=0.0, max_len_extra=NEW_TOKENS + 1)
            run.outputs = [h[0].tokens for h in hyps]
            return sum(len(h[0].tokens) + 1 for h in hyps)
    else:
        def run():
            with torch.no_grad():
                out = model.generate(input_ids=src, num_beams=run.beam, max_new_tokens=NEW_TOKENS, do_sample=False)
            return int((out[:, 1:] != 0).sum())

    results = {}
    for beam in beams:
        run.beam = beam
        start = time.perf_counter()
        run()  # warm-up (and, with +compile, the compilation)
        first_run = time.perf_counter() - start
        times = []
        while len(times) < DECODE_REPEATS and (len(times) < 2 or sum(times) < DECODE_TIMED_S):
            start = time.perf_counter()
            tokens = run()
            times.append(time.perf_counter() - start)
        best = min(times)  # the shared machine's noise only ever slows a run
        results[beam] = {"tok_s": tokens / best, "tokens": tokens, "first_run_s": first_run, "runs": len(times)}
        if impl in ("seqlab", "ct2"):
            results[beam]["outputs"] = getattr(run, "outputs", None)
    return results


def cpu_times() -> tuple[int, int]:
    """(all CPU time, stolen time) since boot in clock ticks, from /proc/stat; (0, 0) where there is none.
    Stolen time is what a hypervisor gave other guests while this machine's CPUs waited."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(ticks), ticks[7] if len(ticks) > 7 else 0


def peaks_by_library() -> dict[str, dict[str, float]]:
    """The fp32 and bf16 matrix-product peaks (FLOP/s) of each library, timed now."""
    return {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}


def in_gflops(by_library: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {precision: {name: flops / 1e9 for name, flops in found.items()} for precision, found in by_library.items()}


def peaks_line(by_library: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{precision} " + " / ".join(f"{name} {gflops:,.0f}" for name, gflops in found.items())
                     + " GFLOP/s" for precision, found in in_gflops(by_library).items())


def mfu(r: dict, peak: float) -> float:
    """Model FLOPs utilization of a training figure: its counted FLOPs per second over ``peak``."""
    return r["flops_per_step"] / r["s_per_step"] / peak


def measure(args: list[str]) -> dict:
    """Run one measurement in a fresh process; its result plus its own peak RSS and the share of the
    CPU time the hypervisor stole meanwhile (``steal_pct``, printed where it reaches 2%)."""
    start, (total, stolen) = time.perf_counter(), cpu_times()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read()
    WALL_S[args[0]] = WALL_S.get(args[0], 0.0) + time.perf_counter() - start
    total_after, stolen_after = cpu_times()
    steal_pct = 100 * (stolen_after - stolen) / max(total_after - total, 1)
    if steal_pct >= 2:
        print(f"        (the hypervisor stole {steal_pct:.0f}% of the CPU time while measuring {' '.join(args[:4])}: "
              "its figure may be low)", flush=True)
    if status != 0:
        return {"error": f"exit {status}"}
    return dict(json.loads(out.strip().splitlines()[-1]), peak_rss_mb=usage.ru_maxrss / 1024,
                process_s=time.perf_counter() - start, steal_pct=steal_pct)


WALL_S: dict[str, float] = {}  # seconds of the run spent in each kind of measurement (train, decode)


def faster_of(earlier: dict, latest: dict) -> dict:
    """One figure measured again: the faster measurement, with every run's tok/s in order
    (``tok_s_runs``) and the larger peak RSS; a failed measurement gives way to the other."""
    if "tok_s" not in earlier:
        return latest
    if "tok_s" not in latest:
        return earlier
    runs = earlier.get("tok_s_runs", [earlier["tok_s"]]) + [latest["tok_s"]]
    return max(earlier, latest, key=lambda r: r["tok_s"]) | {
        "tok_s_runs": runs, "peak_rss_mb": max(earlier["peak_rss_mb"], latest["peak_rss_mb"])}


def train_rows(size: str, steps: int, peaks: dict, results: dict, round_: int = 0) -> None:
    """One round of ``size``'s training measurements, fp32 then bf16, each figure the faster of its
    rounds so far; prints the table of the rounds so far."""
    later = f", round {round_ + 1} of {TRAIN_ROUNDS[size]}, the faster counting" if round_ else ""
    print(f"\n== {size}: training, target tokens/s (batch {BATCH}×{LENGTH}), MFU, peak RSS{later}", flush=True)
    impls = ("seqlab", "torch", "hf")
    for precision in ("fp32", "bf16"):
        row = results["train"].setdefault(f"{size}/{precision}", {})
        for impl in impls if round_ % 2 == 0 else impls[::-1]:
            r = measure(["train", impl, size, precision, str(max(2, math.ceil(steps / TRAIN_ROUNDS[size])))])
            if "error" not in r:
                r["mfu"] = mfu(r, peaks[precision])
            row[impl] = faster_of(row.get(impl, {}), r)
        s = row["seqlab"]
        print(f"{precision}: " + " | ".join(
            f"{impl} {r.get('tok_s', 0):>7,.0f} tok/s MFU {100 * r.get('mfu', 0):4.1f}% RSS "
            f"{r.get('peak_rss_mb', 0):,.0f} MB" for impl, r in row.items()), flush=True)
        print(f"      seqlab / torch.nn.Transformer {s['tok_s'] / row['torch']['tok_s']:.2f}×, "
              f"seqlab / HF Marian {s['tok_s'] / row['hf']['tok_s']:.2f}×", flush=True)
        if any("tok_s_runs" in r for r in row.values()):
            print("      each run, in order: " + " | ".join(
                f"{impl} " + " and ".join(f"{x:,.0f}" for x in r.get("tok_s_runs", [r.get("tok_s", 0)]))
                for impl, r in row.items()), flush=True)


def decode_rows(size: str, results: dict, bf16_pays: bool = True) -> None:
    print(f"\n== {size}: decoding, generated tokens/s ({DECODE_BATCH} sentences, ≤ {NEW_TOKENS} new tokens)",
          flush=True)
    seqlab_modes = ["fp32", "bf16", "int8", "bf16+compile", "int8+compile"]
    if not bf16_pays:  # 40-80 s of the run (bf16 steps, compiled too) for modes nobody should pick here
        seqlab_modes = [mode for mode in seqlab_modes if not mode.startswith("bf16")]
        print("        (seqlab bf16 left out: bf16 matrix products run slower than fp32 on this CPU)")
    # CTranslate2 int8, the reference of every ratio, runs first and again last, the faster run counting:
    # a shared machine's slow spell (CTranslate2 int8 ran 3x slower for minutes) should not make the ratios.
    engines = [("ct2", "int8"), ("hf", "fp32"), ("ct2", "fp32")] + [
        ("seqlab", precision) for precision in seqlab_modes] + [("ct2", "int8")]
    by_engine = {}  # "impl precision" -> beam size -> result
    for impl, precision in engines:
        name = f"{impl} {precision}"
        found = measure(["decode", impl, size, precision, ",".join(map(str, BEAMS))])
        if "error" in found:
            by_engine.setdefault(name, dict.fromkeys(BEAMS, found))
            continue
        process = {key: found.pop(key) for key in ("peak_rss_mb", "process_s", "steal_pct")}  # over both searches
        for beam, r in found.items():
            r = dict(r, **process)
            per_beam = by_engine.setdefault(name, {})
            per_beam[int(beam)] = faster_of(per_beam.get(int(beam), {}), r)
    for beam in BEAMS:
        row = {name: per_beam[beam] for name, per_beam in by_engine.items()}
        base = row["ct2 int8"].get("tok_s") or row["hf fp32"]["tok_s"]
        print(f"beam {beam} (ratio to CTranslate2 int8): " + " | ".join(
            f"{name} {r.get('tok_s', 0):,.0f} ({r.get('tok_s', 0) / base:.2f}×)" for name, r in row.items()),
            flush=True)
        if "tok_s_runs" in row["ct2 int8"]:
            print("        CTranslate2 int8, first and last: " + " and ".join(
                f"{x:,.0f}" for x in row["ct2 int8"]["tok_s_runs"]) + " tok/s", flush=True)
        for precision in ("bf16", "int8"):
            compiled = row.get(f"seqlab {precision}+compile", {})
            if "first_run_s" in compiled:
                print(f"        seqlab {precision}+compile: first run {compiled['first_run_s']:.1f} s with the "
                      f"compilation, {row[f'seqlab {precision}'].get('first_run_s', 0):.1f} s without", flush=True)
        if beam == 1 and row["ct2 fp32"].get("outputs"):
            same = sum(a == b for a, b in zip(row["ct2 fp32"]["outputs"], row["seqlab fp32"]["outputs"]))
            print(f"        greedy outputs identical, seqlab fp32 vs CTranslate2 fp32 on the same weights: "
                  f"{same}/{DECODE_BATCH}", flush=True)
        for r in row.values():
            r.pop("outputs", None)
        results["decode"][f"{size}/beam{beam}"] = row


def measure_all(sizes: list[str], parts: str, steps: int, peaks: dict, results: dict, seconds_left) -> None:
    """Each size's first training round and its decodings, in turn; then the later training rounds
    (tiny's second), each only while ``seconds_left()`` exceeds what the size's first round took."""
    round_s = {}  # size -> seconds of its first training round, the estimate of a later one
    for size in sizes:
        if "train" in parts:
            round_started = time.perf_counter()
            train_rows(size, steps, peaks, results)
            round_s[size] = time.perf_counter() - round_started
        if "decode" in parts:
            decode_rows(size, results, bf16_pays=peaks["bf16"] > peaks["fp32"])
    for size, seconds in round_s.items():
        for round_ in range(1, TRAIN_ROUNDS[size]):
            if seconds_left() < seconds:
                print(f"\n== {size}: training round {round_ + 1} left out, to keep the run within --minutes "
                      f"(its figures are the earlier rounds')", flush=True)
                results.setdefault("train_rounds_left_out", []).append(f"{size}/{round_ + 1}")
                break
            train_rows(size, steps, peaks, results, round_)


def mfu_against(peaks: dict, results: dict) -> None:
    """Every training figure's MFU against ``peaks`` (the faster of the run's two measurements),
    printed as one table."""
    print(f"\nMFU against the faster peak of the run's start and end (fp32 {peaks['fp32'] / 1e9:,.0f}, "
          f"bf16 {peaks['bf16'] / 1e9:,.0f} GFLOP/s):", flush=True)
    for figure, row in results["train"].items():
        precision = figure.split("/")[1]
        for r in row.values():
            if "tok_s" in r:
                r["mfu"] = mfu(r, peaks[precision])
        print(f"{figure}: " + " | ".join(f"{impl} {100 * r.get('mfu', 0):4.1f}%" for impl, r in row.items()),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--parts", default="train,decode", help="train, decode or both (comma-separated)")
    parser.add_argument("--steps", type=int, default=4,
                        help="timed training steps per measurement, fewer (2 at least) once they take "
                        f"{TIMED_TRAIN_S:.0f} s (the fastest counts: noise only slows)")
    parser.add_argument("--minutes", type=float, default=BUDGET_MINUTES,
                        help="the run's budget: later training rounds run only while it stays within it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/last.json")
    parser.add_argument("--worker", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        kind, impl, size, precision, extra = args.worker
        result = (train_worker(impl, size, precision, int(extra)) if kind == "train"
                  else decode_worker(impl, size, precision, [int(b) for b in extra.split(",")]))
        print(json.dumps(result))
        return

    from seqlab.hardware import cpu_model

    started = time.perf_counter()
    by_library = peaks_by_library()
    peaks = {precision: max(found.values()) for precision, found in by_library.items()}
    print(f"matrix-product peak, {args.threads} threads (the faster library counts): {peaks_line(by_library)}",
          flush=True)
    results: dict = {"machine": cpu_model() or platform.machine(), "torch": torch.__version__,
                     "threads": args.threads, "peaks_gflops": {k: v / 1e9 for k, v in peaks.items()},
                     "peaks_by_library_gflops": in_gflops(by_library),
                     "train": {}, "decode": {}}
    seconds_left = lambda: 60 * args.minutes - (time.perf_counter() - started)  # noqa: E731
    measure_all(args.sizes.split(","), args.parts, args.steps, peaks, results, seconds_left)
    if results["train"]:
        at_end = peaks_by_library()
        results["peaks_at_end_by_library_gflops"] = in_gflops(at_end)
        print(f"\nmatrix-product peak at the end: {peaks_line(at_end)}", flush=True)
        peaks = {precision: max(peaks[precision], *found.values()) for precision, found in at_end.items()}
        results["peaks_gflops"] = {k: v / 1e9 for k, v in peaks.items()}
        mfu_against(peaks, results)
    results["wall_s"] = dict(WALL_S, total=time.perf_counter() - started)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\n{results['wall_s']['total'] / 60:.1f} min (" + ", ".join(
        f"{kind} {seconds / 60:.1f}" for kind, seconds in WALL_S.items()) + f"); wrote {args.json}")


if __name__ == "__main__":
    main()
