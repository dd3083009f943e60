"""benchmarks/gpt_gpu.py, the GPU MFU benchmark, run end to end on the CPU with its tiny GPT.

A GPU is lent to a session only now and then, for minutes: the script has to work the first
time it meets one. Here its whole path runs (peaks, the output loss, eager and compiled
training steps, FLOP counting, the JSON) on a 64-wide, 2-layer model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

GPT_GPU_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "gpt_gpu.py"


def test_gpt_gpu_benchmark_runs_on_cpu_and_counts_the_flops_of_its_model(tmp_path):
    out = tmp_path / "gpt_gpu.json"
    run = subprocess.run([sys.executable, str(GPT_GPU_PY), "--device", "cpu", "--size", "tiny", "--steps", "2",
                          "--warmup", "1", "--variants", "seqlab,seqlab+compile", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["datasheet_peak_tflops"] is None
    assert results["measured_peak_tflops"] > 0
    assert re.search(r"MFU +— \(datasheet\) +\d+\.\d% \(measured peak\)", run.stdout)  # a dash, not 0.0%
    eager, compiled = results["train"]["seqlab"], results["train"]["seqlab+compile"]
    for r in (eager, compiled):
        assert "error" not in r and r["tok_s"] > 0 and r["mfu_measured_peak"] > 0 and "mfu" not in r
    assert compiled["graph_breaks"] == 0  # the GPT trains as one compiled graph
    # the FLOPs counted by torch's flop counter against nanoGPT's 6N + 12·L·d·T per token
    assert abs(eager["flops_per_step"] / results["flops_per_step_6n_estimate"] - 1) < 0.03
    assert results["loss"] and all(r["ms"] > 0 for r in results["loss"].values())
