"""Probability calibration: fit one temperature on validation logits, measure expected calibration error.

A network trained with cross-entropy is usually over-confident; dividing its logits by one temperature T
fitted to minimise the validation negative log-likelihood fixes most of that without changing any argmax
(Guo et al., 2017). `EmotionRecognizer` stores T in config.json and applies it in `predict`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

# T is searched in [1/20, 20]: wide enough for any trained classifier, bounded so that a degenerate
# validation set (all correct, or a single row) cannot push it to 0 or infinity.
LOG_T_BOUNDS = (-math.log(20.0), math.log(20.0))
MIN_CALIBRATION_ROWS = 30  # fewer validation rows than this is named as a likely reason for a fit at a bound


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) on labelled rows.

    NLL is convex in 1/T, so a bounded 1-D search (Brent) over log T finds the optimum without tuning.
    Rows with label -100 are ignored.

    Args:
        logits: (N, C) raw logits.
        labels: (N,) class indices.

    Returns:
        T > 0; 1.0 when there are no labelled rows.
    """
    logits, labels = torch.as_tensor(logits).detach().double().cpu(), torch.as_tensor(labels).long().cpu()
    keep = labels != -100
    logits, labels = logits[keep], labels[keep]
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    result = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    best = result.x if result.fun <= nll(0.0) else 0.0
    temperature = float(math.exp(best))
    warning = bound_warning(logits, labels, temperature)
    if warning:
        warnings.warn(warning, stacklevel=2)
    return temperature


def bound_warning(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> str | None:
    """Why a fitted temperature sits at the edge of the search range, or None when it does not.

    A fit at a bound did not find an optimum: NLL was still falling there, so T says more about the validation
    set than about calibration (e.g. it is tiny, the model predicts one class, or it is right on every row).

    Args:
        logits: (N, C) logits the temperature was fitted on (rows with label -100 already dropped or ignored).
        labels: (N,) class indices.
        temperature: the fitted T.
    """
    log_t = math.log(temperature)
    low, high = (abs(log_t - bound) < 1e-3 for bound in LOG_T_BOUNDS)
    if not (low or high):
        return None
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long()
    keep = labels != -100
    logits, labels = logits[keep], labels[keep]
    predicted = logits.argmax(-1)
    accuracy = (predicted == labels).double().mean().item()
    reasons = []
    if len(labels) < MIN_CALIBRATION_ROWS:
        reasons.append(f"validation has only {len(labels)} labelled rows")
    if len(predicted.unique()) == 1:
        reasons.append(f"the model predicts one class (index {predicted[0].item()}) for every row")
    if low and accuracy == 1.0:
        reasons.append("the model is right on every row, so sharper probabilities always look better")
    if high and accuracy <= 1.5 / logits.shape[1]:
        reasons.append(f"accuracy is {accuracy:.0%}, near chance for {logits.shape[1]} classes")
    if not reasons:
        reasons.append("the logits are far from calibrated (an undertrained or overfitted model)")
    side = "lower" if low else "upper"
    return (
        f"temperature scaling stopped at its {side} bound T = {temperature:.3f} (searched "
        f"{math.exp(LOG_T_BOUNDS[0]):.2f}..{math.exp(LOG_T_BOUNDS[1]):.0f}): {'; '.join(reasons)}. The "
        "probabilities are not calibrated; train longer or calibrate on a larger validation split"
    )


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error: |accuracy − confidence| per equal-width confidence bin, weighted by bin size.

    Args:
        probs: (N, C) probabilities (tensor or array).
        labels: (N,) class indices; rows with -100 are ignored.
        n_bins: number of confidence bins over [0, 1].

    Returns:
        ECE in [0, 1]; 0.0 for no labelled rows.
    """
    probs, labels = np.asarray(torch.as_tensor(probs).float().cpu()), np.asarray(torch.as_tensor(labels).cpu())
    keep = labels != -100
    probs, labels = probs[keep], labels[keep]
    if len(labels) == 0:
        return 0.0
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)  # (c-1/n, c] → bin c
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def calibrate(recognizer, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Fit the recognizer's temperature on (validation) logits.

    Sets `recognizer.temperature`; save the recognizer afterwards to keep it.

    Args:
        recognizer: the EmotionRecognizer to calibrate.
        logits: (N, C) raw logits, e.g. the "both" condition of `mmemo.evaluate.collect_logits`.
        labels: (N,) class indices.

    Returns:
        {"temperature", "ece_before", "ece_after", "warning"}: `warning` says why the fit ended at a bound of
        the search range (see `bound_warning`; also issued with warnings.warn), else None.
    """
    temperature = fit_temperature(logits, labels)
    recognizer.temperature = temperature
    return {
        "temperature": temperature,
        "warning": bound_warning(logits, labels, temperature),
        "ece_before": expected_calibration_error(torch.softmax(logits, -1), labels),
        "ece_after": expected_calibration_error(torch.softmax(logits / temperature, -1), labels),
    }
