"""Numeric readouts of the SDIM completer: the residual head and the expected value of digit distributions.

**Residual head** (``readout: residual_head``, SPEC section 3, a depthkit variant). The hidden state of the last
token of a query (the token after which the answer would start; B x D) goes through a small MLP to one number
``h``, and the prediction is a bounded multiplicative correction of the prompt prior (the classical interpolated
estimate written into the prompt)::

    c    = max_log_correction * tanh(h)              log-space correction, |c| <= max_log_correction
    pred = prior_m * exp(c)                          metres, in [prior / e^max, prior * e^max]

Why this form: the prior is already close on most pixels (flat regions), so the head only has to say "how much
nearer or farther"; a multiplicative correction treats 1 m and 50 m scenes alike; ``tanh`` bounds the damage a
badly trained head can do (with the default ``max_log_correction=1.0`` the answer stays within a factor e of the
prior); and the last linear layer starts at zero, so an untrained head returns the prior exactly. It is trained
with :func:`residual_l1_loss`, a dense gradient toward the right number that digit cross-entropy lacks.

**Prior as an input** (``prior_input=True``, recipe ``prompts.head_prior_input``; default off, which is the
head every earlier checkpoint has). The MLP also reads ``log(prior_m)`` next to the normalised hidden state. With
the one-token layout (``pixel_reference: grid_token``) no prompt states the prior, so without this input the head
must guess the ratio ``true / prior`` blind to what the prior says; with it, a hidden state that knows the depth of
the surface the pixel lies on can turn it into the correction. The last layer still starts at zero (an untrained
head returns the prior exactly).

**Uncertainty.** A second linear layer on the same features predicts the scale ``b`` of a Laplace distribution of
the log-space error, ``b = exp(clamp(s, log 1e-4, log 10))``: the expected ``|log pred - log true|``, i.e. the
expected relative error (0.1 = about 10 %). It is trained with :func:`laplace_nll` (``loss.residual_nll``), which
takes the prediction as given (detached), so it learns how wrong the correction is without changing it. Its bias
starts at ``log 0.1``, so an untrained head reports 10 % everywhere. The engine turns ``b`` into the confidence
``exp(-b / tolerance)`` (the text readout's rule with ``sigma / y`` = ``b``).

**Expected digit value** (:func:`expected_digit_value`): under teacher forcing, each digit of the answer number is
predicted from a distribution over the ten digit tokens; the expected number ``sum_i 10^place_i * E[digit_i]`` is
differentiable, and its L1 distance to the label gives the optional numeric loss (``loss.numeric_l1``). The digit
distribution is the softmax over the ten digit logits only (renormalised), so probability on non-digit tokens
neither shrinks nor inflates the value — cross-entropy already punishes that.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ResidualHead", "residual_l1_loss", "laplace_nll", "expected_digit_value", "digit_token_ids", "RESIDUAL_HEAD_FILE"]

RESIDUAL_HEAD_FILE = "residual_head.safetensors"
L1_SPACES = ("log", "metres")
LOG_SCALE_RANGE = (math.log(1e-4), math.log(10.0))
"""Bounds of the predicted log Laplace scale (relative errors 0.01 % .. 1000 %)."""


class ResidualHead(nn.Module):
    """Bounded correction of the prompt prior from a query's last hidden state (see the module docstring).

    Args:
        hidden_size: D, the language model's hidden size.
        max_log_correction: bound of the log-space correction (> 0); the prediction stays within
            ``[prior * exp(-max), prior * exp(max)]``.
        mlp_ratio: width of the hidden layer as a multiple of D (0 = a single linear layer after the norm).
        prior_input: the MLP also reads ``log(prior_m)`` (module docstring); then every call needs the prior.
    """

    def __init__(self, hidden_size: int, max_log_correction: float = 1.0, mlp_ratio: float = 1.0,
                 prior_input: bool = False):
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size={hidden_size} must be >= 1.")
        if not (max_log_correction > 0 and math.isfinite(max_log_correction)):
            raise ValueError(f"max_log_correction={max_log_correction} must be a positive finite number "
                             "(e.g. 1.0: predictions within a factor e of the prior).")
        if mlp_ratio < 0:
            raise ValueError(f"mlp_ratio={mlp_ratio} must be >= 0.")
        self.hidden_size = int(hidden_size)
        self.max_log_correction = float(max_log_correction)
        self.mlp_ratio = float(mlp_ratio)
        self.prior_input = bool(prior_input)
        width = int(round(hidden_size * mlp_ratio))
        n_in = hidden_size + int(self.prior_input)
        layers: list[nn.Module] = [nn.LayerNorm(hidden_size)]  # log(prior) joins after the norm (prior_input)
        if width > 0:
            layers += [nn.Linear(n_in, width), nn.GELU()]
        last = nn.Linear(width if width > 0 else n_in, 1)
        nn.init.zeros_(last.weight)  # untrained head = the prior exactly
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.log_scale = nn.Linear(width if width > 0 else n_in, 1)  # uncertainty (module docstring)
        nn.init.zeros_(self.log_scale.weight)
        nn.init.constant_(self.log_scale.bias, math.log(0.1))

    def config(self) -> dict:
        """Constructor arguments (stored in ``complete.json`` so the head can be rebuilt)."""
        return {"hidden_size": self.hidden_size, "max_log_correction": self.max_log_correction,
                "mlp_ratio": self.mlp_ratio, "prior_input": self.prior_input}

    def _features(self, hidden_last: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if hidden_last.dim() != 2 or hidden_last.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden_last must be B x {self.hidden_size}; got shape {tuple(hidden_last.shape)}.")
        x = self.net[0](hidden_last.to(self.net[-1].weight.dtype))
        if self.prior_input:
            if prior is None:
                raise ValueError("this residual head reads the prior (prior_input=True); pass prior_m.")
            x = torch.cat([x, torch.log(prior).to(x.dtype)[:, None]], dim=-1)
        return self.net[1:-1](x)

    def _correction(self, features: torch.Tensor) -> torch.Tensor:
        return self.max_log_correction * torch.tanh(self.net[-1](features).squeeze(-1).float())

    def log_correction(self, hidden_last: torch.Tensor, prior_m=None) -> torch.Tensor:
        """B x D hidden states (and B priors in metres, needed with ``prior_input``) → B log-space corrections in
        [-max, max] (float32)."""
        prior = None if prior_m is None else self._prior(hidden_last, prior_m)
        return self._correction(self._features(hidden_last, prior))

    def _prior(self, hidden_last: torch.Tensor, prior_m) -> torch.Tensor:
        prior = torch.as_tensor(prior_m, dtype=torch.float32, device=hidden_last.device).reshape(-1)
        if prior.shape[0] != hidden_last.shape[0]:
            raise ValueError(f"{hidden_last.shape[0]} hidden states but {prior.shape[0]} priors; give one per query.")
        if not bool((prior > 0).all()):
            raise ValueError("prior_m must be > 0 metres for every query (the correction is multiplicative); "
                             f"got min {float(prior.min()):.4g}.")
        return prior

    def predict(self, hidden_last: torch.Tensor, prior_m: torch.Tensor) -> torch.Tensor:
        """Metres (B, float32) = ``prior_m * exp(log_correction(hidden_last))``; ``prior_m`` is B metres > 0."""
        prior = self._prior(hidden_last, prior_m)
        return prior * torch.exp(self._correction(self._features(hidden_last, prior)))

    forward = predict

    def predict_with_scale(self, hidden_last: torch.Tensor, prior_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(metres B as :meth:`predict`, Laplace scale B of the log-space error: the expected relative error)."""
        prior = self._prior(hidden_last, prior_m)
        features = self._features(hidden_last, prior)
        s = self.log_scale(features).squeeze(-1).float().clamp(*LOG_SCALE_RANGE)
        return prior * torch.exp(self._correction(features)), torch.exp(s)


def residual_l1_loss(pred_m: torch.Tensor, target_m: torch.Tensor, space: str = "log",
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 between predictions and labels (both B metres > 0).

    ``space="log"`` (default): ``|log pred - log target|``, a relative error, so near and far pixels (indoor and
    driving scenes in one batch) pull equally; ``"metres"``: ``|pred - target|``, the evaluation's MAE. ``weight``
    (B, >= 0) gives a weighted mean.
    """
    if space not in L1_SPACES:
        raise ValueError(f"space={space!r}; allowed: {L1_SPACES}.")
    pred_m = pred_m.float().reshape(-1)
    target_m = torch.as_tensor(target_m, dtype=torch.float32, device=pred_m.device).reshape(-1)
    if pred_m.shape != target_m.shape:
        raise ValueError(f"pred has {pred_m.shape[0]} values but target has {target_m.shape[0]}.")
    if space == "log":
        err = (torch.log(pred_m.clamp_min(1e-6)) - torch.log(target_m.clamp_min(1e-6))).abs()
    else:
        err = (pred_m - target_m).abs()
    if weight is None:
        return err.mean()
    weight = torch.as_tensor(weight, dtype=torch.float32, device=pred_m.device).reshape(-1)
    return (err * weight).sum() / weight.sum().clamp_min(1e-12)


def laplace_nll(pred_m: torch.Tensor, scale: torch.Tensor, target_m: torch.Tensor) -> torch.Tensor:
    """Mean Laplace negative log-likelihood of the log-space error, ``|log pred - log target| / b + log b``
    (constant dropped), with the prediction detached: it trains the scale ``b`` (B, > 0) only — the expected
    relative error of ``pred_m`` (B metres) against ``target_m`` (B metres > 0)."""
    pred = pred_m.detach().float().reshape(-1).clamp_min(1e-6)
    target = torch.as_tensor(target_m, dtype=torch.float32, device=pred.device).reshape(-1).clamp_min(1e-6)
    scale = scale.float().reshape(-1)
    if not pred.shape == target.shape == scale.shape:
        raise ValueError(f"pred, scale and target must have one value per query; got {pred.shape[0]}, "
                         f"{scale.shape[0]}, {target.shape[0]}.")
    err = (torch.log(pred) - torch.log(target)).abs()
    return (err / scale + torch.log(scale)).mean()


def digit_token_ids(tokenizer) -> list[int]:
    """Token ids of ``"0"``..``"9"`` (index = digit value). Qwen's tokenizers spell numbers one digit per token."""
    from depthkit.complete.prompts import single_token_ids

    return single_token_ids(tokenizer, "0123456789")


def expected_digit_value(logits: torch.Tensor, digit_places: torch.Tensor, digit_ids, index: torch.Tensor | None = None,
                         num_values: int | None = None) -> torch.Tensor:
    """Expected value of answer numbers under teacher forcing (float32, metres).

    Args:
        logits: B x L x V language-model logits, or N x V logits of selected positions.
        digit_places: B x L (or N); at the positions whose logits predict a digit of an answer number (i.e.
            position t when token t+1 is that digit — already shifted), the digit's place value ``10**place`` (1.0
            for the units, 0.001 for the third decimal); 0 everywhere else.
        digit_ids: the ten digit token ids (:func:`digit_token_ids`), index = digit value.
        index: which number each position belongs to (B x L or N, long); default: its row (one number per row).
        num_values: how many numbers (default: B, or ``index.max() + 1``).

    Returns:
        ``value[q] = sum over positions t of number q: digit_places[t] * sum_d d * softmax(logits[t, digit_ids])[d]``.
    """
    if logits.shape[:-1] != digit_places.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and digit_places {tuple(digit_places.shape)} must share their "
                         "leading dimensions.")
    if index is None:
        rows = torch.arange(logits.shape[0], device=logits.device)
        index = rows.view(-1, *([1] * (digit_places.dim() - 1))).expand_as(digit_places)
        num_values = logits.shape[0] if num_values is None else num_values
    elif index.shape != digit_places.shape:
        raise ValueError(f"index {tuple(index.shape)} must have the shape of digit_places {tuple(digit_places.shape)}.")
    if num_values is None:
        num_values = int(index.max()) + 1 if index.numel() else 0
    ids = torch.as_tensor(list(digit_ids), dtype=torch.long, device=logits.device)
    mask = digit_places != 0
    sel = logits[mask][:, ids].float()  # only the digit positions: n x 10
    values = torch.arange(10, dtype=torch.float32, device=logits.device)
    expected = (sel.softmax(-1) * values).sum(-1) * digit_places[mask].float()
    out = torch.zeros(num_values, dtype=torch.float32, device=logits.device)
    return out.index_add(0, index[mask].to(logits.device), expected)
