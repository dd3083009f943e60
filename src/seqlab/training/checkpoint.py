"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically.

One checkpoint is one ``.safetensors`` file: the model's weights, the optimizer's moment
estimates and the RNG state as tensors, and a JSON document (config, tokenizer files, step, data
position, metrics) in the file's metadata header. It is written to a temporary file, fsynced
and renamed, so a crash leaves either the old checkpoint or the new one, never half of one. A
``.json`` copy of the metadata sits beside it for people and tools (``jq``). Nothing is ever
unpickled.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from seqlab.errors import UserError

FORMAT = "seqlab-checkpoint/1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _unique_tensors(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors stores each storage once: keep the first name of a shared tensor, alias the rest."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[prefix + name] = seen[key]
            continue
        tensors[prefix + name] = t.detach().contiguous().cpu()
        if key is not None:
            seen[key] = prefix + name
    return tensors, aliases


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-able structure."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                      source: str | Path = "the checkpoint") -> None:
    if len(meta["param_groups"]) != len(optimizer.param_groups):  # written by an older seqlab
        raise UserError(f"{source}: its optimizer state has {len(meta['param_groups'])} parameter group(s), this "
                        f"seqlab makes {len(optimizer.param_groups)} (with train.weight_decay > 0, biases and "
                        "LayerNorm gains now get none): resume it with the seqlab version that wrote it")
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = t
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(torch_states: list[torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random generator training touches: torch's (one per process), Python's and NumPy's."""
    tensors = {f"rng.torch.{rank}": s for rank, s in enumerate(torch_states or [torch.get_rng_state()])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    meta = {"python": [version, list(internal), gauss], "numpy": [name, int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], rank: int = 0) -> None:
    """Put back the generators saved by :func:`rng_state`; process ``rank`` takes its own torch state."""
    torch.set_rng_state(tensors.get(f"rng.torch.{rank}", tensors["rng.torch.0"]))
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None,
                    torch_rng_states: list[torch.Tensor] | None = None) -> None:
    """Write model (+ optimizer, + every RNG state) tensors and ``meta`` atomically to ``path``."""
    path = Path(path)
    tensors, aliases = _unique_tensors(model.state_dict(), "model.")
    meta = dict(meta, format=FORMAT, aliases=aliases)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
        rng_tensors, meta["rng"] = rng_state(torch_rng_states)
        tensors.update(rng_tensors)
    text = json.dumps(meta, indent=1)
    try:
        atomic_write_bytes(path, save(tensors, metadata={"seqlab": text}))
        atomic_write_bytes(path.with_suffix(".json"), text.encode())
    except OSError as err:
        raise UserError(f"{path}: cannot write checkpoint ({err.strerror}); free some space or choose another run_dir. "
                        "The previous checkpoint is intact.") from None


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; a missing, truncated or foreign file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a .safetensors checkpoint or a run directory")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(header["seqlab"])
    except Exception as err:  # safetensors raises several types for damaged files
        raise UserError(f"{path}: not a readable seqlab checkpoint ({type(err).__name__}: {err}); "
                        "the file may be truncated or corrupt: use another checkpoint") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return tensors, meta


def model_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict, shared tensors restored under all their names."""
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    for alias, target in meta.get("aliases", {}).items():
        state[alias.removeprefix("model.")] = state[target.removeprefix("model.")]
    return state


def link_atomically(target: Path, link: Path) -> None:
    """Make ``link`` another name of ``target`` (no copy), replacing what ``link`` was in one step."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.link(target, tmp)
    os.replace(tmp, link)


def average_checkpoints(paths: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The element-wise mean of the models' weights (as fairseq's average_checkpoints.py); meta of the last."""
    if not paths:
        raise UserError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for path in paths:
        tensors, meta_i = read_checkpoint(path)
        state = model_state(tensors, meta_i)
        if total and set(state) != set(total):
            raise UserError(f"{path}: its weights have other names than {paths[0]}'s; average checkpoints of one run")
        for name, t in state.items():
            if name in total and total[name].shape != t.shape:
                raise UserError(f"{path}: {name} has shape {tuple(t.shape)}, not {tuple(total[name].shape)}")
            total[name] = total.get(name, 0) + t.double()
        meta = meta_i
    averaged = {name: (t / len(paths)).to(torch.float32) for name, t in total.items()}
    return averaged, meta
