"""``seqlab report DIR``: one self-contained HTML page (plots embedded) for a run or an experiment.

A training run gets its configuration, its loss / PPL / BLEU (or accuracy) curves drawn from
``metrics.jsonl``, example outputs on the dev set and, for models with attention, the attention
maps of one dev sentence. An experiment directory (``experiment.json``) gets its settings, its
tables and every figure it drew.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import torch

from seqlab.analysis.plots import line_panels, read_csv
from seqlab.errors import UserError

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.ok { color: #1a7f37; } .bad { color: #cf222e; } .muted { color: #666; font-size: 0.9em; }
"""


def image_tag(path: Path, alt: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt or path.stem)}">'


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class='muted'>(no rows)</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(name)}</h2>\n{content}\n" for name, content in sections)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def experiment_sections(directory: Path, info: dict) -> list[tuple[str, str]]:
    sections = [("Settings", f"<pre>{html.escape(json.dumps(info.get('settings', info), indent=2)[:4000])}</pre>")]
    if info["experiment"] == "long-range":
        from seqlab.analysis.long_range import LABELS

        rows = read_csv(directory / "results.csv")
        models = list(dict.fromkeys(r["model"] for r in rows))
        pivot = []
        for key in dict.fromkeys((r["task"], r["length"]) for r in rows):
            cells = {r["model"]: r for r in rows if (r["task"], r["length"]) == key}
            pivot.append({"task": key[0], "L": key[1],
                          **{LABELS[m]: f"{float(cells[m]['exact_match']):.1f}%" for m in models if m in cells}})
        sections.append(("Exact match by task and length", table(pivot)))
        sections.append(("Every run", table(rows)))
    elif info["experiment"] == "gradients":
        rows = read_csv(directory / "gradients.csv")
        T = max(int(r["distance"]) for r in rows) + 1
        picks = sorted({1, 5, 10, 20, T - 1} & set(range(T)))
        summary = []
        for model in dict.fromkeys(r["model"] for r in rows):
            for state in ("fresh", "trained"):
                norms = {int(r["distance"]): float(r["gradient_norm"]) for r in rows
                         if (r["model"], r["state"]) == (model, state)}
                summary.append({"model": model, "state": state,
                                **{f"d = {d}": f"{norms[d]:.2e}" for d in picks}})
        sections.append(("‖∂L_T/∂x_t‖ at a few distances", table(summary)))
        sections.append(("Parameters", table([{"model": m, "parameters": f"{n:,}"}
                                              for m, n in info.get("parameters", {}).items()])))
    elif info["experiment"] == "length-buckets":
        sections.append(("BLEU by source length", table(read_csv(directory / "length_buckets.csv"))))
    figures = "".join(f"<p>{image_tag(p)}</p>" for p in sorted(directory.glob("*.png")))
    sections.append(("Figures", figures or "<p class='muted'>(none)</p>"))
    return sections


def run_sections(directory: Path) -> list[tuple[str, str]]:
    from seqlab.analysis.attention_maps import attention_maps, draw_attention
    from seqlab.data.tasks import read_split
    from seqlab.evaluation import translate_lines
    from seqlab.runs import load_model

    loaded = load_model(directory)
    cfg = loaded.config
    sections = [("Configuration", f"<pre>{html.escape((directory / 'config.yaml').read_text(encoding='utf-8'))}</pre>")]
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()] \
        if (directory / "metrics.jsonl").exists() else []
    train_points = [r for r in records if "train_loss" in r]
    valid_points = [r for r in records if "valid" in r]
    with tempfile.TemporaryDirectory() as tmp:
        figures = []
        if train_points or valid_points:
            loss = {"training loss (label-smoothed)": ([r["step"] for r in train_points],
                                                       [r["train_loss"] for r in train_points])}
            if valid_points:
                loss["dev loss (cross-entropy)"] = ([r["step"] for r in valid_points],
                                                    [r["valid"]["loss"] for r in valid_points])
            panels = {"loss per target": loss}
            for key, label in (("ppl", "dev perplexity"), ("bleu", "dev BLEU"), ("accuracy", "dev accuracy (%)")):
                points = [r for r in valid_points if r["valid"].get(key) is not None]
                if points:
                    panels[label] = {label: ([r["step"] for r in points], [r["valid"][key] for r in points])}
            figures.append(line_panels(Path(tmp) / "curves.png", panels, f"Training curves of {directory.name}",
                                       "training step", "value"))
        last = loaded.meta.get("metrics") or {}
        step = loaded.meta.get("state", {}).get("step")
        summary = table([{"checkpoint": loaded.path.name, "step": step,
                          **{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in last.items()
                             if k != "step" and v is not None}}])
        sections.append(("Scores of the checkpoint", summary))
        if figures:
            sections.append(("Curves", "".join(image_tag(f) for f in figures)))
        dev = cfg.data.dev
        if dev is not None and loaded.codec.task != "lm":
            corpus = read_split(cfg.model.kind, dev)
            sources, refs = corpus.src[:5], corpus.tgt[:5]
            outputs = translate_lines(loaded.model, loaded.codec, sources, cfg.decode, torch.device("cpu"))
            rows = [{"source": s, "reference": r, "output": o[0][0] if o else "",
                     "match": "✓" if o and o[0][0].strip() == r.strip() else "✗"}
                    for s, r, o in zip(sources, refs, outputs)]
            sections.append(("Examples from the dev set", table(rows)))
            has_attention = cfg.model.kind == "transformer" or getattr(cfg.model, "attention", "none") != "none"
            if has_attention and sources:
                maps, labels = attention_maps(loaded, sources[0])
                grid = draw_attention(maps, labels, Path(tmp) / "attention", sources[0])[0]
                sections.append(("Attention maps of the first dev sentence", image_tag(grid)))
        elif loaded.codec.task == "lm":
            from seqlab.decoding.sampling import generate

            samples = generate(loaded.model, [], max_new_tokens=40, temperature=0.8, seed=0, num_samples=5)
            text = "".join(f"<li>{html.escape(loaded.tgt_tok.decode(s))}</li>" for s in samples)
            sections.append(("Samples (temperature 0.8, seed 0)", f"<ul>{text}</ul>"))
    return sections


def write_report(directory: Path, out: Path | None = None) -> Path:
    """Write DIR/report.html (or ``out``) for a run or an experiment directory; returns its path."""
    from seqlab.training.checkpoint import atomic_write_bytes

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory; give a run directory or an experiment's --out directory")
    if (directory / "experiment.json").exists():
        info = json.loads((directory / "experiment.json").read_text())
        title, sections = f"seqlab experiment: {info['experiment']} ({directory.name})", experiment_sections(directory, info)
    elif (directory / "config.yaml").exists():
        title, sections = f"seqlab run: {directory.name}", run_sections(directory)
    else:
        raise UserError(f"{directory}: neither a run directory (config.yaml) nor an experiment (experiment.json)")
    out = out or directory / "report.html"
    atomic_write_bytes(out, page(title, sections).encode("utf-8"))
    return out
