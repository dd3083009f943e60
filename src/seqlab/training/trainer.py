"""The one training loop, for every model.

Every input is checked before anything is written: the config (already validated), the corpora
(line counts, UTF-8, empty pairs), the run directory. Then: train or load the tokenizers, build
the model, and run teacher-forced steps with Adam and the warm-up / inverse-√step schedule,
validating every ``train.valid_every`` steps (dev loss, PPL, BLEU), keeping the best and the
last checkpoint, and stopping early when the metric stops improving.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seqlab import __version__
from seqlab.config import Config, DecodeConfig, config_to_yaml
from seqlab.data.batching import Example, batch_indices, collate, count_targets, example_length, padding_ratio
from seqlab.data.reader import ParallelCorpus
from seqlab.data.tasks import TASK_OF, Codec, read_split
from seqlab.data.tokenizer import Tokenizer
from seqlab.errors import UserError
from seqlab.hardware import autocast, keep_freed_memory, precision_warning
from seqlab.evaluation import EvaluationResult, evaluate, merge_results
from seqlab.models import build_model, count_parameters
from seqlab.runs import BEST, LAST, make_codec, pick_device, tokenizer_files
from seqlab.training import distributed
from seqlab.training.signals import Interrupted, StopSignals
from seqlab.training.checkpoint import (
    link_atomically, model_state, read_checkpoint, restore_optimizer, restore_rng, save_checkpoint,
)
from seqlab.training.loss import batch_loss
from seqlab.training.schedule import learning_rate
from seqlab.training.tally import StepTally


# fp16: the loss scale below which overflowing gradients are the loss's fault, not the scale's (fairseq's
# --min-loss-scale). From torch's 65,536 the scaler gets there after 30 overflowing updates in a row.
MIN_LOSS_SCALE = 1e-4


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so ``--resume`` continues exactly."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0  # index of the next batch in this epoch's (seeded) batch order
    best_metric: float | None = None
    validations_without_improvement: int = 0
    bad_steps: int = 0  # consecutive updates skipped for a non-finite loss or gradient (as of the last check)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    stop_reason: str
    last_validation: dict[str, Any] | None


class RunLog:
    """Messages go to the terminal (above the progress bar) and to RUN_DIR/train.log (``path=None``: neither file)."""

    def __init__(self, path: Path | None, quiet: bool):
        self.path, self.quiet = path, quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            tqdm.write(message, file=sys.stderr)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One JSON line per log interval and per validation in RUN_DIR/metrics.jsonl (read by seqlab report)."""
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    has_run = (run_dir / LAST).exists()
    if resume and not has_run:
        raise UserError(f"run_dir {run_dir}: no {LAST} to resume from; drop --resume to start a new run")
    if not resume and run_dir.exists() and any(run_dir.glob("checkpoint_*.safetensors")):
        raise UserError(f"run_dir {run_dir}: already holds a run; pass --resume to continue it, or set another "
                        f"run_dir (e.g. --set run_dir={run_dir}-2). Nothing was changed.")
    parent = run_dir if run_dir.exists() else next(p for p in run_dir.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"run_dir {run_dir}: {parent} is not a writable directory; choose another run_dir")


def _read_corpora(cfg: Config) -> tuple[ParallelCorpus, ParallelCorpus | None]:
    train = read_split(cfg.model.kind, cfg.data.train)
    dev = read_split(cfg.model.kind, cfg.data.dev) if cfg.data.dev else None
    if dev is not None and cfg.train.valid_max_sentences:
        n = cfg.train.valid_max_sentences
        dev = ParallelCorpus(dev.src[:n], dev.tgt[:n], dev.line_numbers[:n], dev.report)
    return train, dev


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (β = 0.9, 0.98 by default), its fused kernel where this torch has one for the device.

    With ``train.weight_decay: 0`` (the default) this is the paper's Adam. Otherwise the decay is
    decoupled from the gradient (Loshchilov & Hutter 2019: θ ← θ − lr·λ·θ beside the Adam step)
    and applies to the weight matrices and embeddings only, not to biases and LayerNorm gains, as
    nanoGPT and Hugging Face's Trainer do.
    """
    decay, params = cfg.train.weight_decay, list(model.parameters())
    groups = [{"params": params}]  # without decay one group, as checkpoints written before the split have
    if decay > 0:
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    options = dict(lr=cfg.peak_lr(), betas=cfg.train.adam_betas, eps=cfg.train.adam_eps, weight_decay=decay)
    try:
        return torch.optim.AdamW(groups, fused=True, **options)
    except (RuntimeError, TypeError):  # no fused AdamW for this device or torch: the multi-tensor one
        return torch.optim.AdamW(groups, foreach=True, **options)


def _split_name(files) -> str:
    return str(files.text) if files.text is not None else f"{files.src}|{files.tgt}"


def _make_codec(cfg: Config, corpus: ParallelCorpus, load: bool, labels: list[str] | None = None) -> Codec:
    """Tokenizers (trained on the training text, or ``load``-ed from the run directory) and, for
    classifiers, the labels (given, e.g. from the checkpoint, or collected from the training file)."""
    files = tokenizer_files(cfg)
    task = TASK_OF[cfg.model.kind]
    if load:
        src_tok, tgt_tok = (Tokenizer.load(cfg.run_dir / files[side]) for side in ("src", "tgt"))
    elif task == "translation" and not cfg.tokenizer.joint:
        src_tok, tgt_tok = Tokenizer.train(corpus.src, cfg.tokenizer), Tokenizer.train(corpus.tgt, cfg.tokenizer)
    else:
        text = {"translation": corpus.src + corpus.tgt, "classify": corpus.src}.get(task, corpus.tgt)
        src_tok = tgt_tok = Tokenizer.train(text, cfg.tokenizer)
    if labels is None and task == "classify" and cfg.model.objective == "classify":
        labels = sorted(set(corpus.tgt))
    return make_codec(cfg, src_tok, tgt_tok, labels)


def _checkpoint_meta(cfg: Config, state: TrainState, codec: Codec, metrics: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "seqlab_version": __version__,
        "config": cfg.model_dump(mode="json"),
        "tokenizers": tokenizer_files(cfg),
        "vocab_sizes": {"src": len(codec.src_tok), "tgt": len(codec.tgt_tok)},
        "labels": codec.labels,
        "state": vars(state),
        "metrics": metrics,
    }


def _validate(model, cfg: Config, codec: Codec, dev: ParallelCorpus, device,
              procs: distributed.Processes) -> EvaluationResult:
    """Dev loss (and PPL), then greedy decoding for BLEU or the classifier's accuracy.

    With several processes each evaluates every world-th pair and the parts are gathered and
    merged: the same figures as one process, in a fraction of the time.
    """
    greedy = DecodeConfig(**dict(cfg.decode.model_dump(), beam_size=1))
    indices = list(range(procs.rank, len(dev.tgt), procs.world))
    shard = ParallelCorpus([dev.src[i] for i in indices], [dev.tgt[i] for i in indices],
                           [dev.line_numbers[i] for i in indices])
    result = evaluate(model, codec, shard, greedy, device, cfg.train.max_tokens, name=_split_name(cfg.data.dev))
    if not procs.active:
        return result
    return merge_results(distributed.gather((indices, result), procs), dev, codec.task)


def expected_total_steps(cfg: Config, state: TrainState, batches_per_epoch: int, steps_per_s: float,
                         seconds_left: float | None) -> int:
    """The step at which training will stop: the first of max_steps, max_epochs and max_minutes to come.

    The progress bar's length, so that its percentage and ETA stay honest when the wall-clock or
    epoch budget, not ``max_steps``, ends the run.
    """
    total = cfg.train.max_steps
    if cfg.train.max_epochs:
        total = min(total, state.step + (cfg.train.max_epochs - state.epoch) * batches_per_epoch - state.next_batch)
    if seconds_left is not None and steps_per_s > 0:
        total = min(total, state.step + max(0, int(steps_per_s * seconds_left)))
    return max(total, state.step)


def _improved(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def update(train_model, optimizer, group: list[list[Example]], procs: distributed.Processes, cfg: Config,
           device: torch.device, scaler: torch.amp.GradScaler | None = None
           ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """One optimizer update from this process's share of ``group`` (world × update_freq batches).

    Each batch's summed loss is divided by the target count of the whole group, so the update is
    the mean over every target of the group whatever the number of processes and batches; DDP
    averages the processes' gradients, hence the factor ``world``. Returns this process's summed
    loss and targets, and whether the update was applied, as a bool on the device.

    A non-finite gradient norm skips the update on the device itself: the fused AdamW takes the
    flag as its ``found_inf`` (in fp16 the gradient scaler passes its own, and halves its scale).
    So the host never waits for the device within a step, and the next batch is collated while
    the device still works on this one; the loop reads the flags when it logs.
    """
    total = sum(count_targets(batch) for batch in group)
    mine = group[procs.rank :: procs.world]
    optimizer.zero_grad(set_to_none=True)
    loss_sum, targets = torch.zeros((), device=device), 0
    for i, examples in enumerate(mine):
        batch = collate(examples).to(device)
        last = i == len(mine) - 1
        with train_model.no_sync() if procs.active and not last else nullcontext():  # all-reduce once per update
            with autocast(device, cfg.train.precision):  # bf16/fp16 matrix products; the loss is taken in fp32
                loss = batch_loss(train_model, batch, cfg.train.label_smoothing)
            scaled = loss * procs.world / total
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += loss.detach()
        targets += batch.n_targets
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(train_model.parameters(), cfg.train.clip_norm or float("inf"))
    finite = torch.isfinite(grad_norm)  # () bool, on the device
    if scaler is not None:  # fp16: the scaler skips an update whose gradients overflowed and halves its scale
        scaler.step(optimizer)
        scaler.update()
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = (~finite).float()  # the fused kernel leaves weights and moments as they are
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif finite:  # a host sync, where no fused kernel takes the flag
        optimizer.step()
    return loss_sum, targets, finite


def train(cfg: Config, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; returns where the run stands when it stops.

    Under torchrun every process calls this; rank 0 alone writes the run directory.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    procs, device = distributed.start(pick_device(cfg.train.device))
    if device.type == "cpu":
        keep_freed_memory()  # a step's fresh tensors of megabytes come from memory already paged in
    main = procs.main
    run_dir = Path(cfg.run_dir)

    # 1. Check every input before writing anything.
    train_corpus, dev_corpus = _read_corpora(cfg)
    _check_run_dir(run_dir, resume)
    resume_tensors, resume_meta = read_checkpoint(run_dir / LAST) if resume else (None, None)
    if resume_meta is not None:
        stored = resume_meta["config"]
        for section in ("model", "tokenizer"):
            mine = getattr(cfg, section).model_dump(mode="json")
            for key, value in stored[section].items():
                if mine.get(key) != value:
                    raise UserError(f"--resume: config key {section}.{key} is {mine.get(key)!r} but the checkpoint in "
                                    f"{run_dir} was trained with {value!r}; restore it or start a new run_dir")

    torch.manual_seed(cfg.train.seed)
    labels = resume_meta.get("labels") if resume_meta is not None else None
    codec = _make_codec(cfg, train_corpus, load=resume, labels=labels) if (resume or main) else None
    train_name = _split_name(cfg.data.train)
    if codec is not None:
        examples, report = codec.encode(train_corpus, cfg.data.train.text or cfg.data.train.src, cfg.data.max_len)
        if not examples:
            raise UserError(f"{train_name}: no training pairs left after filtering ({report.summary('train')}); "
                            f"raise data.max_len or check the files")
        if dev_corpus is not None:  # a bad label or vector in the dev set is found now, not at the first validation
            codec.encode(dev_corpus, cfg.data.dev.text or cfg.data.dev.src)

    # 2. The run directory (rank 0); the other processes then read the tokenizers it wrote.
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for side, name in tokenizer_files(cfg).items():
                (codec.src_tok if side == "src" else codec.tgt_tok).save(run_dir / name)
            (run_dir / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    distributed.barrier(procs)
    if codec is None:
        codec = _make_codec(cfg, train_corpus, load=True)
        examples, report = codec.encode(train_corpus, cfg.data.train.text or cfg.data.train.src, cfg.data.max_len)
    log = RunLog(run_dir / "train.log" if main else None, quiet=not (progress and main))
    log(report.summary(f"train {train_name}"))
    first_epoch = batch_indices([example_length(e) for e in examples], cfg.train.max_tokens, True, cfg.train.seed)
    log(f"batches: {cfg.train.max_tokens} padded tokens each, {100 * padding_ratio(examples, first_epoch):.1f}% of "
        "target positions are <pad> (length bucketing)")
    if dev_corpus is not None:
        log(dev_corpus.report.summary(f"dev   {_split_name(cfg.data.dev)}"))

    # 3. Model, optimizer, and the state to resume from.
    model = build_model(cfg.model, len(codec.src_tok), codec.n_outputs).to(device)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if cfg.train.precision == "fp16" else None
    warning = precision_warning(device, cfg.train.precision)
    if warning:
        log(f"warning: {warning}")
    state = TrainState()
    if resume_meta is not None:
        model.load_state_dict(model_state(resume_tensors, resume_meta))
        restore_optimizer(optimizer, resume_tensors, resume_meta["optimizer"], run_dir / LAST)
        restore_rng(resume_tensors, resume_meta["rng"], procs.rank)
        if scaler is not None and resume_meta.get("grad_scaler"):
            scaler.load_state_dict(resume_meta["grad_scaler"])
        state = TrainState(**resume_meta["state"])
        log(f"resumed from {run_dir / LAST} at step {state.step}")
    train_model = DistributedDataParallel(model) if procs.active else model
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    outputs = f"{len(codec.labels)} labels" if codec.labels else f"vocabulary {len(codec.src_tok)}/{len(codec.tgt_tok)}"
    log(f"model: {cfg.model.kind}, {count_parameters(model):,} parameters; {outputs}; device {device}, "
        f"{torch.get_num_threads()} threads" + (f", {procs.world} processes" if procs.active else ""))

    from torch.utils.tensorboard import SummaryWriter  # imported late: slow, and only needed here

    writer = SummaryWriter(str(run_dir / "tensorboard")) if main else None
    lengths = [example_length(e) for e in examples]
    metric = cfg.validation_metric()
    started = time.monotonic()
    bar = tqdm(total=cfg.train.max_steps, initial=state.step, unit="step", disable=not (progress and main),
               dynamic_ncols=True)
    last_validation: dict[str, Any] | None = None
    tally = StepTally(device, state.bad_steps)  # read when logging and checkpointing: no host sync per step
    checked_at = state.step
    peak_lr = cfg.peak_lr()
    group_size = procs.world * cfg.train.update_freq
    save_every = cfg.train.save_every or cfg.train.valid_every
    checkpointed_at = validated_at = first_step = state.step

    def check_skipped_updates() -> None:
        """Logs the updates skipped since the last check and stops a run that has diverged: at logging
        and checkpoints, where the host reads the device anyway. A skipped update still counts as a
        step (as in Hugging Face's Trainer): the host only learns of it here."""
        nonlocal checked_at
        if checked_at == state.step:  # a log line and a checkpoint at the same step: read once
            return
        skipped, state.bad_steps = tally.read_skips()
        span, checked_at = f"steps {checked_at + 1}–{state.step}", state.step
        last_good = lambda: run_dir / LAST if (run_dir / LAST).exists() else "none yet"  # noqa: E731
        if scaler is not None:  # fp16 overflows are the scaler's business, until its scale runs out
            if skipped:
                log(f"{span}: {skipped} update(s) skipped, fp16 gradients overflowed; loss scale now "
                    f"{scaler.get_scale():g}")
            if scaler.get_scale() < MIN_LOSS_SCALE:
                raise UserError(f"training stopped at step {state.step}: fp16 gradients overflow at every loss "
                                f"scale down to {MIN_LOSS_SCALE:g} (the loss or the weights diverged); last good "
                                f"checkpoint: {last_good()}. Lower train.lr, raise train.warmup_steps, or train "
                                "with precision bf16")
            return
        if skipped:
            log(f"{span}: {skipped} update(s) skipped for a non-finite loss or gradient "
                f"({state.bad_steps} in a row at step {state.step})")
        if state.bad_steps >= cfg.train.max_bad_steps:
            raise UserError(f"training stopped at step {state.step}: {state.bad_steps} non-finite losses or "
                            f"gradients in a row (train.max_bad_steps); last good checkpoint: {last_good()}. "
                            "Lower train.lr, raise train.warmup_steps, or check the data")

    def log_window(lr: float, batches_per_epoch: int) -> None:
        """The steps since the last log line, summed over the processes (the one read of the device
        in between): loss, lr and tokens/s to the bar, train.log, TensorBoard and metrics.jsonl."""
        check_skipped_updates()
        window = tally.read_window()
        total_loss, counted, total_tokens = distributed.sum_across(
            [window.loss, window.counted, window.targets], procs, device)
        if not main:
            return
        loss = total_loss / counted if counted else float("nan")  # nan: no finite loss in the window
        tok_s = total_tokens / max(window.seconds, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}", epoch=state.epoch, refresh=False)
        running = time.monotonic() - started
        seconds_left = 60 * cfg.train.max_minutes - running if cfg.train.max_minutes else None
        bar.total = expected_total_steps(cfg, state, batches_per_epoch, (state.step - first_step) / running,
                                         seconds_left)
        bar.refresh()
        writer.add_scalar("train/loss", loss, state.step)
        writer.add_scalar("train/lr", lr, state.step)
        writer.add_scalar("train/target_tokens_per_s", tok_s, state.step)
        with open(run_dir / "train.log", "a", encoding="utf-8") as f:
            f.write(f"step {state.step:>7} | loss {loss:.4f} | lr {lr:.3e} | {tok_s:,.0f} tok/s\n")
        append_metrics(run_dir, {"step": state.step, "train_loss": loss if counted else None, "lr": lr,
                                 "tokens_per_s": tok_s})

    def save_state(metrics: dict[str, Any] | None, rng_states: list[torch.Tensor]) -> None:
        """checkpoint_last (+ checkpoint_STEP, the last keep_last kept) with everything --resume needs."""
        meta = _checkpoint_meta(cfg, state, codec, metrics)
        if scaler is not None:
            meta["grad_scaler"] = scaler.state_dict()
        if cfg.train.keep_last == 1:
            save_checkpoint(run_dir / LAST, model, meta, optimizer, rng_states)
            return
        step_file = run_dir / f"checkpoint_{state.step:08d}.safetensors"
        save_checkpoint(step_file, model, meta, optimizer, rng_states)
        for suffix in (".safetensors", ".json"):
            link_atomically(step_file.with_suffix(suffix), (run_dir / LAST).with_suffix(suffix))
        for old in sorted(run_dir.glob("checkpoint_[0-9]*.safetensors"))[: -cfg.train.keep_last]:
            old.unlink()
            old.with_suffix(".json").unlink(missing_ok=True)

    def checkpoint(validate: bool) -> bool:
        """Every process: gather RNG states; rank 0: validate (if asked) and save. True: early stopping says stop."""
        nonlocal last_validation, checkpointed_at, validated_at
        check_skipped_updates()  # before anything is saved
        checkpointed_at = state.step
        validated_at = state.step if validate else validated_at
        rng_states = distributed.gather_rng(procs)
        result = _validate(model, cfg, codec, dev_corpus, device, procs) if validate and dev_corpus else None
        if not main:
            return False
        metrics: dict[str, Any] | None = last_validation
        improved = False
        if validate:
            metrics, improved = {"step": state.step}, True
            if result is not None:
                metrics.update(loss=result.loss, ppl=result.ppl, accuracy=result.accuracy)
                if result.scores is not None:
                    metrics.update(bleu=result.scores.bleu, chrf=result.scores.chrf,
                                   exact_match=result.scores.exact_match)
                improved = _improved(metric, result.metric(metric), state.best_metric)
                if improved:
                    state.best_metric = result.metric(metric)
                    state.validations_without_improvement = 0
                else:
                    state.validations_without_improvement += 1
                for k, v in metrics.items():
                    if k != "step" and v is not None:
                        writer.add_scalar(f"valid/{k}", v, state.step)
                log(f"step {state.step:>7} | valid {result.summary()}" + ("  *best*" if improved else ""))
            state.history.append(metrics)
            append_metrics(run_dir, {"valid": metrics, "step": state.step})
            last_validation = metrics
        save_state(metrics, rng_states)
        if improved:
            save_checkpoint(run_dir / BEST, model, _checkpoint_meta(cfg, state, codec, metrics))
        patience = cfg.train.patience
        return validate and dev_corpus is not None and patience is not None \
            and state.validations_without_improvement >= patience

    stop = 0
    with StopSignals() as signals:
        while not stop:
            order = batch_indices(lengths, cfg.train.max_tokens, shuffle=True, seed=cfg.train.seed + state.epoch)
            while state.next_batch < len(order) and not stop:
                group = order[state.next_batch : state.next_batch + group_size]
                if procs.active and len(group) < group_size:
                    break  # too few batches left to give every process its share: they join the next epoch's shuffle
                lr = learning_rate(state.step + 1, cfg.train.schedule, peak_lr, cfg.train.warmup_steps)
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
                model.train()
                loss_sum, targets, applied = update(train_model, optimizer, [[examples[i] for i in b] for b in group],
                                                    procs, cfg, device, scaler)
                state.next_batch += len(group)
                state.step += 1
                tally.add(loss_sum, targets, applied)
                bar.update(1)

                if state.step % cfg.train.log_every == 0:
                    log_window(lr, len(order) // group_size)

                early = False
                if state.step % cfg.train.valid_every == 0:
                    early = checkpoint(validate=True)
                elif state.step % save_every == 0:
                    checkpoint(validate=False)
                decision = 0
                if main:
                    if early:
                        decision = 1
                    elif state.step >= cfg.train.max_steps:
                        decision = 2
                    elif cfg.train.max_minutes and time.monotonic() - started > 60 * cfg.train.max_minutes:
                        decision = 3
                    elif signals.received:
                        decision = 4
                stop = distributed.from_main(decision, procs)  # the same decision in every process
            if state.next_batch >= len(order) or (procs.active and len(order) - state.next_batch < group_size):
                state.epoch += 1
                state.next_batch = 0
                if cfg.train.max_epochs and state.epoch >= cfg.train.max_epochs and not stop:
                    stop = 5
        if stop == 4:
            if checkpointed_at != state.step:
                checkpoint(validate=False)
            bar.close()
            if writer is not None:
                writer.close()
            distributed.stop()
            name = signal.Signals(signals.received).name if signals.received else "a signal"
            raise Interrupted(f"stopped by {name} at step {state.step}; checkpoint saved to {run_dir / LAST}. "
                              f"Continue with: seqlab train CONFIG --resume", signals.received or signal.SIGTERM)
    if validated_at != state.step or state.step == first_step:  # the same test in every process
        checkpoint(validate=True)
    bar.close()
    if writer is not None:
        writer.close()
    stop_reason = {1: f"early stopping: no improvement in {metric} for {cfg.train.patience} validations",
                   2: f"reached train.max_steps ({cfg.train.max_steps})",
                   3: f"reached train.max_minutes ({cfg.train.max_minutes})",
                   5: f"reached train.max_epochs ({cfg.train.max_epochs})"}[stop]
    minutes = (time.monotonic() - started) / 60
    log(f"stopped at step {state.step} after {minutes:.1f} min: {stop_reason}")
    if dev_corpus is not None and state.best_metric is not None:
        log(f"best validation {metric}: {state.best_metric:.4g} → {run_dir / BEST}")
    distributed.stop()
    return TrainResult(run_dir, state, stop_reason, last_validation)
