"""The training objective: next-token cross-entropy with label smoothing, ignoring <pad>; or,
for many-to-one models, cross-entropy over classes or squared error on a score.

Transformer-family models hand over their last hidden states instead of logits, and
:func:`output_cross_entropy` folds the output layer into the loss, a few hundred rows at a time,
so the (B·T, V) logits (131 MB in float32 for 4,096 tokens and 8,000 words) never exist whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqlab.data.batching import Batch
from seqlab.data.tokenizer import PAD
from seqlab.models.linear import WeightGradSum, mm


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Σ_t −log p(y_t | y_<t, x) over the real tokens of a batch (a sum, not a mean).

    logits: (B, T, V); target: (B, T) with <pad> where there is no token. With label smoothing ε
    (Szegedy et al. 2016; the paper uses 0.1) the target distribution puts 1 − ε on the reference
    token and spreads ε uniformly over the vocabulary.
    """
    return F.cross_entropy(
        logits.flatten(0, 1).float(), target.flatten(), ignore_index=PAD,
        label_smoothing=label_smoothing, reduction="sum",
    )


class _OutputCrossEntropy(torch.autograd.Function):
    """Σ_t CE(h_t Wᵀ, y_t) over row chunks, with the gradient computed on the way (forward).

    The loss is a scalar, so its gradient is known up to the incoming scale factor as soon as
    each chunk's softmax is: ∂L/∂z = softmax(z) − q, with q the (smoothed) target distribution
    and zero rows at <pad>. Each chunk's logits are used once and dropped; the backward pass
    only scales the stored ∂L/∂h and ∂L/∂W (the approach of Liger Kernel's fused linear
    cross-entropy). The hidden states arrive in the compute dtype (bfloat16 under autocast), the
    weight in its own (the float32 master) and is cast once; logits, softmax and the weight
    gradient's running sum are float32.
    """

    @staticmethod
    def forward(ctx, hidden, master_weight, target, label_smoothing, need_grad, chunk_elements):
        N, C = hidden.shape  # (N, C) hidden states, weight (V, C), target (N,)
        V = master_weight.size(0)
        weight = master_weight.to(hidden.dtype)  # cast here, once: ∂L/∂W goes back in float32 unrounded
        rows = min(N, max(16, chunk_elements // V))
        eps = label_smoothing
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = WeightGradSum(V, C, hidden.dtype, hidden.device) if need_grad else None
        # Every chunk reuses the same logits buffers: a fresh multi-MB tensor per chunk is
        # page-faulted in each time (up to 6 ms per bf16-to-float32 copy on two Zen 5 cores).
        logits = torch.empty(rows, V, dtype=torch.float32, device=hidden.device)  # z, exp z, then ∂L/∂z
        low = None if hidden.dtype == torch.float32 else torch.empty(rows, V, dtype=hidden.dtype, device=hidden.device)
        for start in range(0, N, rows):
            h, y = hidden[start : start + rows], target[start : start + rows]  # (n, C), (n,)
            z = logits[: len(y)]  # logits (n, V), float32
            if low is None:
                mm(h, weight.t(), out=z)
            else:
                z.copy_(torch.mm(h, weight.t(), out=low[: len(y)]))
            z_target, z_mean = z.gather(1, y[:, None]).squeeze(1), z.mean(dim=-1)  # read before z is reused
            z_max = z.amax(dim=-1, keepdim=True)
            e = z.sub_(z_max).exp_()  # exp(z − max z), in place of the logits
            sum_e = e.sum(dim=-1, keepdim=True)
            lse = (z_max + sum_e.log()).squeeze(1)  # log Σ_v exp z_v, (n,)
            nll = lse - z_target  # −log p(y_t)
            loss = nll if eps == 0 else (1 - eps) * nll + eps * (lse - z_mean)  # + ε · mean_v −log p(v)
            real = y != PAD
            total += torch.where(real, loss, 0.0).sum()
            if not need_grad:
                continue
            g = e.div_(sum_e)  # softmax(z), still in the same buffer
            if eps:
                g.sub_(eps / V)
            g.scatter_add_(1, y[:, None], torch.full((len(y), 1), eps - 1.0, device=g.device))  # − (1 − ε) at y_t
            g = g.mul_(real[:, None])  # ∂L/∂z: (n, V), zero at <pad>
            if low is not None:
                g = low[: len(y)].copy_(g)  # in the products' dtype
            mm(g, weight, out=grad_hidden[start : start + rows])  # ∂L/∂h = ∂L/∂z W
            grad_weight.add(g, h)  # ∂L/∂W += (∂L/∂z)ᵀ h
        if need_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.total)
            ctx.weight_dtype = master_weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_total.to(grad_hidden.dtype), (grad_weight * grad_total).to(ctx.weight_dtype),
                None, None, None, None)


def chunk_elements(device: torch.device) -> int:
    """Logits per chunk of :func:`output_cross_entropy`.

    CPU: ~16 MB of float32 logits (loss forward + backward, 4,096 × 512 → 8,000, two Zen 5
    cores: 8 MB chunks 374-451 ms (fp32) / 188-201 ms (bf16), 16 MB 320-340 / 182-187 ms).
    A GPU wants fewer, larger products: with GPT-2's vocabulary of 50,304, 16 MB chunks would
    be 83 rows, some 200 chunks of a dozen small kernels each for 16,384 tokens. 256 MB chunks
    (1,334 rows) are a choice not yet measured on a GPU: ``benchmarks/gpt_gpu.py --loss-only``
    times it against other sizes and against whole logits.
    """
    return 2**22 if device.type == "cpu" else 2**26


def output_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                         label_smoothing: float = 0.0, chunk: int | None = None) -> torch.Tensor:
    """:func:`token_cross_entropy` of the logits ``hidden @ weightᵀ``, without materialising them.

    hidden: (B, T, C) final hidden states; weight: (V, C) the output layer; target: (B, T).
    Under autocast the products run in its dtype, as ``F.linear``'s would. The weight's gradient
    comes back in the weight's own dtype without a detour through the low precision (a float32
    master weight gets the float32 sum of the chunks' products). ``chunk``: logits per chunk
    (default :func:`chunk_elements`).
    """
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        hidden = hidden.to(torch.get_autocast_dtype(device))
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(device, enabled=False):
        return _OutputCrossEntropy.apply(hidden.flatten(0, 1), weight, target.flatten(), label_smoothing, need_grad,
                                         chunk or chunk_elements(hidden.device))


def _unwrapped(model):
    """The seqlab model inside torch.compile and DistributedDataParallel wrappers."""
    for attr in ("_orig_mod", "module"):
        model = getattr(model, attr, model)
    return model


def batch_loss(model, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """The summed loss of one batch for any model kind; divide by ``batch.n_targets`` for the mean.

    Sequence outputs (teacher forcing): token cross-entropy of ``model(src, tgt_in)`` against
    ``tgt_out`` (for models with an ``output_weight``, of their hidden states through
    :func:`output_cross_entropy`). One output per sequence: cross-entropy over classes, or squared error on a score.
    """
    if batch.labels is None:
        inner = _unwrapped(model)
        weight = inner.output_weight() if hasattr(inner, "output_weight") else None
        if weight is not None:  # hidden states through the wrappers, the output layer here
            hidden = model(batch.src, batch.tgt_in, features_only=True)  # (B, T, C)
            return output_cross_entropy(hidden, weight, batch.tgt_out, label_smoothing)
        return token_cross_entropy(model(batch.src, batch.tgt_in), batch.tgt_out, label_smoothing)
    out = model(batch.src).float()  # (B, n_classes) or (B,)
    if batch.labels.is_floating_point():
        return F.mse_loss(out, batch.labels, reduction="sum")
    return F.cross_entropy(out, batch.labels, label_smoothing=label_smoothing, reduction="sum")
