"""GPT-2-small training in bf16 on a GPU: seqlab's trainer step against Hugging Face GPT-2, with MFU.

    PYTHONPATH=src python benchmarks/gpt_gpu.py [--batch 16] [--steps 10] [--json benchmarks/gpt_gpu.json]
    python benchmarks/gpt_gpu.py --device cpu --size tiny --steps 2     (checks the script itself)

The GPU target of issue 6: a decoder-only model of GPT-2 small's size (d_model 768, 12 layers,
12 heads, FFN 3,072, 1,024 positions, tied output; vocabulary 50,304, GPT-2's 50,257 rounded up
to a multiple of 64 as nanoGPT does) trained in bf16 at sequence length 1,024 at ≥ 45% MFU.

Measured, one after another in this process, on the same random token batch (B × 1,024):

* ``seqlab``: one step of ``seqlab train`` itself (:func:`seqlab.training.trainer.update`: the
  batch collated from token lists and copied to the GPU, bf16 autocast with fp32 master weights,
  the fused output cross-entropy, gradient clipping with its one host sync, fused AdamW);
  ``seqlab+compile`` with ``train.compile: true`` (the model through ``torch.compile``);
* ``hf``: ``GPT2LMHeadModel`` built from a ``GPT2Config`` of the same shape (SDPA attention,
  dropout 0), bf16 autocast, ``F.cross_entropy`` of its logits, clipping, fused AdamW, no host
  sync; ``hf+compile`` the same model through ``torch.compile``;
* the output loss alone, forward and backward, at several chunk sizes and against whole logits
  with ``F.cross_entropy`` (``seqlab.training.loss.chunk_elements`` picks the default).

MFU = FLOPs of a step (counted by ``torch.utils.flop_counter`` on the eager seqlab step: every
matrix product and attention's two, causal attention counted whole as in PaLM's and nanoGPT's
MFU) per second, against the datasheet's dense bf16 peak where the GPU is known (H100/H200 SXM:
989 TFLOP/s) and against an 8192³ bf16 matrix product timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

SIZES = {"gpt2": dict(d_model=768, layers=12, heads=12, ffn=3072, vocab=50304, seq=1024),
         "tiny": dict(d_model=64, layers=2, heads=2, ffn=256, vocab=512, seq=64)}
# Dense bf16 tensor-core peaks from the vendors' datasheets (FLOP/s), by a part of the device name.
DATASHEET_BF16 = {"H200": 989.4e12, "H100 80GB HBM3": 989.4e12, "H100 PCIe": 756.5e12, "A100": 312e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def datasheet_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in DATASHEET_BF16.items() if part in name), None)


def matmul_peak(device: torch.device, repeats: int = 10) -> float:
    """FLOP/s of a square bf16 matrix product, 8192³ on a GPU (1024³ on a CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def flash_attention_check(device: torch.device, s: dict, batch: int) -> str:
    """Whether SDPA's flash kernel takes this model's attention (causal, bf16, head size d/h)."""
    if device.type != "cuda":
        return "no GPU"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(batch, s["heads"], s["seq"], s["d_model"] // s["heads"], device=device, dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return "yes"
    except RuntimeError as err:
        return f"no ({str(err).splitlines()[0][:120]})"


def seqlab_step(s: dict, device: torch.device, tokens: torch.Tensor, compile: bool):
    """One ``seqlab train`` update on ``tokens`` (B, T): the same function the trainer calls."""
    from seqlab.config import Config
    from seqlab.data.batching import Example
    from seqlab.models import build_model
    from seqlab.training.distributed import Processes
    from seqlab.training.trainer import make_optimizer, update

    cfg = Config(run_dir="unused", data={"train": {"text": "unused.txt"}},
                 model=dict(kind="gpt", d_model=s["d_model"], n_heads=s["heads"], n_layers=s["layers"],
                            d_ff=s["ffn"], dropout=0.0, max_positions=s["seq"]),
                 train=dict(precision="bf16", compile=compile, label_smoothing=0.0, clip_norm=1.0, lr=6e-4,
                            warmup_steps=0, device=device.type))
    torch.manual_seed(0)
    model = build_model(cfg.model, s["vocab"], s["vocab"]).to(device).train()
    optimizer = make_optimizer(model, cfg)
    train_model = torch.compile(model) if compile else model
    # <bos> + T − 1 tokens in, the T − 1 tokens + <eos> out: T predictions per sequence
    group = [[Example(i, None, row[1:].tolist()) for i, row in enumerate(tokens)]]
    return model, lambda: update(train_model, optimizer, group, Processes(), cfg, device)


def hf_step(s: dict, device: torch.device, tokens: torch.Tensor, compile: bool):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=s["vocab"], n_positions=s["seq"], n_embd=s["d_model"], n_layer=s["layers"],
                     n_head=s["heads"], n_inner=s["ffn"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=True)
    forward = torch.compile(model) if compile else model
    ids = tokens.to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = forward(input_ids=ids, labels=ids).loss  # HF shifts the labels: T − 1 predictions
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds of the first call (with any compilation) and the mean seconds of ``steps`` later ones."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return first, (time.perf_counter() - start) / steps


def measure_training(variant: str, s: dict, device: torch.device, tokens: torch.Tensor, args) -> dict:
    from torch._dynamo.utils import counters

    impl, _, compiled = variant.partition("+")
    build = seqlab_step if impl == "seqlab" else hf_step
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    counters.clear()
    model, step = build(s, device, tokens, compile=bool(compiled))
    result = {"parameters": sum(p.numel() for p in model.parameters())}
    if not compiled:
        result["flops_per_step"] = count_flops(step)  # also a warm-up step
    first, seconds = time_steps(step, device, args.warmup, args.steps)
    result.update(first_step_s=first, s_per_step=seconds, tok_s=tokens.numel() / seconds,
                  graph_breaks=sum(counters["graph_break"].values()))
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return result


def measure_loss(s: dict, device: torch.device, batch: int, repeats: int) -> dict:
    """The output layer + cross-entropy alone, forward and backward, at several chunk sizes."""
    from seqlab.training.loss import chunk_elements, output_cross_entropy

    g = torch.Generator(device="cpu").manual_seed(0)
    N, C, V = batch * s["seq"], s["d_model"], s["vocab"]
    hidden = torch.randn(N, C, generator=g).to(device, torch.bfloat16).requires_grad_()
    weight = (torch.randn(V, C, generator=g) * 0.02).to(device).requires_grad_()
    target = torch.randint(4, V, (N,), generator=g).to(device)
    ways = {f"chunks of {2**k // V} rows" + (" (default)" if 2**k == chunk_elements(device) else ""):
            (lambda k=k: output_cross_entropy(hidden[None], weight, target[None], chunk=2**k))
            for k in (22, 24, 26, 28) if 2**k // V < N}
    ways["whole logits, F.cross_entropy"] = lambda: F.cross_entropy(
        F.linear(hidden, weight).float(), target, reduction="sum")
    results = {}
    for name, loss_of in ways.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_of()
            loss.backward()
            hidden.grad = weight.grad = None

        _, seconds = time_steps(step, device, 2, repeats)
        results[name] = {"ms": 1e3 * seconds}
        if device.type == "cuda":
            results[name]["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        print(f"  {name:<34} {1e3 * seconds:8.2f} ms" + (
            f"  peak {results[name]['peak_memory_gb']:.1f} GB" if device.type == "cuda" else ""), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="gpt2", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (each --size's seq tokens)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (their mean counts)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the compilation among them)")
    parser.add_argument("--variants", default="seqlab,seqlab+compile,hf,hf+compile")
    parser.add_argument("--loss-only", action="store_true", help="time only the output loss at its chunk sizes")
    parser.add_argument("--json", default="benchmarks/gpt_gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpt_gpu.py: no CUDA device here (torch.cuda.is_available() is False); "
                         "use --device cpu --size tiny to check the script on a CPU")
    s = SIZES[args.size]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: dict = {"device": name, "torch": torch.__version__, "size": args.size, "shape": s,
                     "batch": args.batch, "steps": args.steps, "train": {}}
    measured, datasheet = matmul_peak(device), datasheet_peak(device)
    results.update(measured_peak_tflops=measured / 1e12, datasheet_peak_tflops=datasheet and datasheet / 1e12,
                   flash_attention=flash_attention_check(device, s, args.batch))
    print(f"{name}, torch {torch.__version__}: bf16 matrix product {measured / 1e12:,.1f} TFLOP/s measured, "
          f"datasheet {f'{datasheet / 1e12:,.1f}' if datasheet else 'unknown'}; flash attention: "
          f"{results['flash_attention']}", flush=True)

    print(f"\noutput layer + cross-entropy, forward and backward, {args.batch * s['seq']:,} tokens:", flush=True)
    results["loss"] = measure_loss(s, device, args.batch, repeats=max(3, args.steps))
    if args.loss_only:
        return write(results, args.json)

    tokens = torch.randint(4, s["vocab"], (args.batch, s["seq"]), generator=torch.Generator().manual_seed(0))
    n_params = None  # from the first model measured
    print(f"\ntraining, bf16, batch {args.batch} × {s['seq']} tokens:", flush=True)
    flops = None
    for variant in args.variants.split(","):
        try:
            r = measure_training(variant, s, device, tokens, args)
        except Exception as err:  # one variant failing (a compiler error, memory) must not lose the others
            r = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
            print(f"  {variant:<16} failed: {r['error']}", flush=True)
            results["train"][variant] = r
            continue
        flops = flops or r.get("flops_per_step")  # the first count (seqlab's) serves all: the same work
        if flops:
            achieved = flops / r["s_per_step"]
            r["tflops"] = achieved / 1e12
            r["mfu_measured_peak"] = achieved / measured
            if datasheet:
                r["mfu"] = achieved / datasheet
        n_params = n_params or r["parameters"]
        results["train"][variant] = r
        print(f"  {variant:<16} {r['tok_s']:>10,.0f} tok/s  {1e3 * r['s_per_step']:7.1f} ms/step  "
              f"{r.get('tflops', 0):6.1f} TFLOP/s  MFU {percent(r.get('mfu'))} (datasheet) "
              f"{percent(r.get('mfu_measured_peak'))} (measured peak)  first step {r['first_step_s']:.1f} s"
              + (f"  peak {r['peak_memory_gb']:.1f} GB" if "peak_memory_gb" in r else "")
              + (f"  graph breaks {r['graph_breaks']}" if "+compile" in variant else ""), flush=True)
    if n_params:  # nanoGPT's estimate, for comparison with the counted FLOPs
        non_position = n_params - s["seq"] * s["d_model"]
        per_token = 6 * non_position + 12 * s["layers"] * s["d_model"] * s["seq"]
        results["flops_per_step_6n_estimate"] = per_token * tokens.numel()
        print(f"\nFLOPs per step: counted {flops or 0:.3e}, nanoGPT's 6N + 12·L·d·T estimate "
              f"{per_token * tokens.numel():.3e}", flush=True)
    timed = {v: r for v, r in results["train"].items() if "mfu" in r}
    if timed:
        best = max(timed, key=lambda v: timed[v]["mfu"])
        print(f"target ≥ 45% MFU (datasheet peak): best {best} at {100 * timed[best]['mfu']:.1f}%; seqlab ÷ "
              f"Hugging Face: " + ", ".join(f"{v} {timed[v]['tok_s'] / timed[h]['tok_s']:.2f}×"
                                            for v, h in (("seqlab", "hf"), ("seqlab+compile", "hf+compile"))
                                            if v in timed and h in timed), flush=True)
    write(results, args.json)


def percent(share: float | None) -> str:
    """A share as a percentage, or a dash where there is none (a device without a datasheet peak; a failed count)."""
    return "    —" if share is None else f"{100 * share:4.1f}%"


def write(results: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
