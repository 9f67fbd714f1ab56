"""SharpDepth's training losses: score distillation (SDS) in x0 form and the noise-aware reconstruction loss.

SDS (DreamFusion, rewritten for an x0-predicting teacher such as Lotus): the student's latent ẑ is noised to ẑ_t,
the frozen teacher f_G predicts x0 from it, and the update direction is

    ∇ = w(t) · (ẑ − f_G(ẑ_t; z_img, t)),   w(t) = 1 − ᾱ_t   (= σ_t², as in the public code)

never back-propagated through the teacher. It is realised as the surrogate ``½ ‖ẑ − sg(ẑ − ∇)‖²`` whose gradient
w.r.t. ẑ is exactly ∇ (``reduction="sum"``) or ∇ / N with N = ẑ.numel() (``reduction="mean"``, the default and the
code's choice, which makes the loss scale independent of the latent size).

Reconstruction: ``Σ |d̂ − d| · e / Σ e`` on [0, 1]-scaled maps (normalised depth · 0.5 + 0.5), summed over the whole
batch; pixels with e = 0 contribute nothing, and a batch with Σ e = 0 gives 0 (with a graph, so backward works).

Ground truth (depthkit, off by default): where the training data has dense GT (synthetic scenes), ``gt_loss`` scores
the output as inference forms it against GT in the same [0, 1]-scaled normalised space: mean |ô − g| over pixels with
GT, and mean |∇ô − ∇g| over horizontal/vertical neighbour pairs that both have GT (the edges DBE measures).

The weights λ_SDS, λ_recons (and λ_gt, λ_gt_grad) live in :class:`depthkit.sharpen.model.SharpDepthConfig`.
"""

from __future__ import annotations

import torch

__all__ = ["sds_weight", "sds_loss", "sds_teacher_input", "sample_sds_timesteps", "reconstruction_loss", "gt_loss"]


def _timesteps(timesteps, batch_size: int, device) -> torch.Tensor:
    if isinstance(timesteps, torch.Tensor):
        t = timesteps.to(device=device, dtype=torch.long).reshape(-1)
        return t.expand(batch_size) if t.numel() == 1 else t
    return torch.full((batch_size,), int(timesteps), dtype=torch.long, device=device)


def sds_weight(timesteps, alphas_cumprod: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """w(t) = 1 − ᾱ_t as a ``B x 1 x 1 x 1`` float32 tensor (``timesteps``: int or ``[B]`` long tensor)."""
    a = alphas_cumprod.float()
    t = _timesteps(timesteps, batch_size, a.device)
    return (1.0 - a[t]).view(-1, 1, 1, 1)


def sds_loss(z_hat: torch.Tensor, teacher_x0: torch.Tensor, timesteps, alphas_cumprod: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """SDS surrogate ``½ ‖ẑ − sg(ẑ − w(t)(ẑ − f_G))‖²`` (float32 scalar).

    Args:
        z_hat: the student's predicted latent ``B x C x h x w`` (with grad).
        teacher_x0: f_G(ẑ_t; z_img, t), same shape (treated as a constant).
        timesteps: the t used to noise ẑ (int or ``[B]``).
        alphas_cumprod: the scheduler's ``alphas_cumprod`` (``[T]``).
        reduction: "mean" (gradient ∇/N) or "sum" (gradient ∇).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; received {reduction!r}.")
    if teacher_x0.shape != z_hat.shape:
        raise ValueError(f"teacher_x0 {tuple(teacher_x0.shape)} must match z_hat {tuple(z_hat.shape)}.")
    z = z_hat.float()
    w = sds_weight(timesteps, alphas_cumprod, z.shape[0]).to(z.device)
    # nan_to_num: a NaN from the teacher must not poison the student (the public code does the same)
    grad = torch.nan_to_num(w * (z.detach() - teacher_x0.detach().float()))
    target = (z.detach() - grad).detach()
    sq = (z - target) ** 2
    return 0.5 * (sq.mean() if reduction == "mean" else sq.sum())


def sds_teacher_input(z_hat: torch.Tensor, noise: torch.Tensor, timesteps, scheduler) -> torch.Tensor:
    """ẑ_t = sqrt(ᾱ_t) ẑ + sqrt(1 − ᾱ_t) ε via ``scheduler.add_noise``; detached (no gradient flows through the
    teacher in SDS)."""
    t = _timesteps(timesteps, z_hat.shape[0], z_hat.device)
    return scheduler.add_noise(z_hat.detach(), noise.to(z_hat.dtype), t).detach()


def sample_sds_timesteps(batch_size: int, config, num_train_timesteps: int = 1000,
                         generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``[B]`` long timesteps for SDS: ``num_train_timesteps − 1`` when ``config.sds_timestep == "fixed"`` [code],
    else uniform integers in ``[config.sds_t_min, config.sds_t_max]`` (capped at T − 1) [paper]."""
    last = int(num_train_timesteps) - 1
    if config.sds_timestep == "fixed":
        return torch.full((batch_size,), last, dtype=torch.long, device=device)
    lo, hi = min(int(config.sds_t_min), last), min(int(config.sds_t_max), last)
    gen_device = generator.device if generator is not None else device
    t = torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=gen_device)
    return t.to(device)


def reconstruction_loss(d_hat01: torch.Tensor, d01: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Noise-aware reconstruction ``Σ |d̂ − d| · e / Σ e`` (float32 scalar) on [0, 1]-scaled ``B x 1 x H x W`` maps.

    ``e`` is the discrepancy map (a constant weight). Returns 0 when Σ e = 0.
    """
    if not (d_hat01.shape == d01.shape == e.shape):
        raise ValueError(f"d_hat01 {tuple(d_hat01.shape)}, d01 {tuple(d01.shape)} and e {tuple(e.shape)} must "
                         "have the same shape.")
    w = e.detach().float()
    total = w.sum()
    weighted = ((d_hat01.float() - d01.detach().float()).abs() * w).sum()
    return weighted / total if total > 0 else weighted * 0.0


def gt_loss(out01: torch.Tensor, gt01: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised terms against ground truth on [0, 1]-scaled ``B x 1 x H x W`` maps: ``(l1, grad_l1)``.

    ``l1`` = mean |out − gt| over ``valid`` pixels; ``grad_l1`` = mean |Δout − Δgt| over horizontal and vertical
    neighbour pairs whose two pixels are both valid (Δ = right minus left, below minus above), the pairs of both
    directions pooled. Each is 0 (with a graph) when nothing is valid.
    """
    if not (out01.shape == gt01.shape == valid.shape):
        raise ValueError(f"out01 {tuple(out01.shape)}, gt01 {tuple(gt01.shape)} and valid {tuple(valid.shape)} must "
                         "have the same shape.")
    out, gt, ok = out01.float(), gt01.detach().float(), valid.detach().to(torch.bool)
    diff = (out - gt).abs()
    l1 = diff[ok].mean() if ok.any() else diff.sum() * 0.0
    terms, count = [], 0
    for dim in (-1, -2):
        n = out.shape[dim] - 1
        pair = ok.narrow(dim, 1, n) & ok.narrow(dim, 0, n)
        d_out = out.narrow(dim, 1, n) - out.narrow(dim, 0, n)
        d_gt = gt.narrow(dim, 1, n) - gt.narrow(dim, 0, n)
        terms.append((d_out - d_gt).abs()[pair].sum())
        count += int(pair.sum())
    grad = (terms[0] + terms[1]) / count if count else out.sum() * 0.0
    return l1, grad
