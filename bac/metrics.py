"""Error statistics of bone age predictions: MAE +/- SD, per sex and age band, bootstrap CI, paired tests.

Used in: every paper notebook and notebooks/90_comparison.ipynb.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# Ren et al. 2019's six age bands, in months: [0,3), [3,6), ..., [15,18] years (the last band closed).
BAND_EDGES = (0, 36, 72, 108, 144, 180, 216)
BAND_NAMES = ("0-3 y", "3-6 y", "6-9 y", "9-12 y", "12-15 y", "15-18 y")


def age_band(months) -> pd.Categorical:
    m = np.clip(np.asarray(months, dtype=float), 0, 216 - 1e-9)  # ages above 18 y join the last band
    return pd.Categorical.from_codes(np.searchsorted(BAND_EDGES, m, side="right") - 1, BAND_NAMES)


def summary(y_true, y_pred) -> dict:
    """MAE, SD of the absolute error, RMSE, median absolute error and n."""
    err = np.asarray(y_pred, float) - np.asarray(y_true, float)
    ae = np.abs(err)
    return dict(mae=float(ae.mean()), sd=float(ae.std(ddof=1)) if len(ae) > 1 else 0.0,
                rmse=float(np.sqrt((err ** 2).mean())), median_ae=float(np.median(ae)), n=int(len(ae)))


def mean_predictor_mae(train_ages, test_ages) -> float:
    """The MAE of always predicting the training mean: the bar every model must clearly beat."""
    return float(np.abs(np.asarray(test_ages, float) - np.mean(train_ages)).mean())


def by_sex_band(y_true, y_pred, male) -> pd.DataFrame:
    """MAE +/- SD per sex and Ren's age band (rows sex x band, with counts)."""
    df = pd.DataFrame(dict(ae=np.abs(np.asarray(y_pred, float) - np.asarray(y_true, float)),
                           sex=np.where(np.asarray(male, bool), "male", "female"), band=age_band(y_true)))
    out = df.groupby(["sex", "band"], observed=False).ae.agg(mae="mean", sd="std", n="count").reset_index()
    return out


def bootstrap_ci(values, stat=np.mean, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `stat` over `values`."""
    values = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = np.apply_along_axis(stat, 1, values[idx])
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_tests(abs_err_a, abs_err_b) -> dict:
    """Paired t-test and Wilcoxon signed-rank test between two methods' per-image absolute errors."""
    from scipy import stats
    a, b = np.asarray(abs_err_a, float), np.asarray(abs_err_b, float)
    if len(a) != len(b):
        raise ValueError(f"paired tests need errors on the same images: {len(a)} vs {len(b)}")
    t = stats.ttest_rel(a, b)
    diff = a - b
    w = stats.wilcoxon(a, b) if np.any(diff != 0) else None
    return dict(mean_diff=float(diff.mean()), t=float(t.statistic), p_t=float(t.pvalue),
                w=float(w.statistic) if w else float("nan"), p_wilcoxon=float(w.pvalue) if w else 1.0)


def interval_coverage(y_true, lo, hi) -> float:
    """Fraction of true ages inside their predicted interval [lo, hi]."""
    y = np.asarray(y_true, float)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


def distribution_interval(probs, level: float = 0.9, ages=None) -> tuple[np.ndarray, np.ndarray]:
    """Central `level` interval of per-image age distributions (N, K) over bins `ages` (default 1..K)."""
    p = np.asarray(probs, float)
    p = p / p.sum(1, keepdims=True)
    ages = np.arange(1, p.shape[1] + 1) if ages is None else np.asarray(ages, float)
    cdf = np.cumsum(p, 1)
    lo = ages[np.argmax(cdf >= (1 - level) / 2, axis=1)]
    hi = ages[np.argmax(cdf >= 1 - (1 - level) / 2, axis=1)]
    return lo, hi


def plot_pred_vs_true(ax, y_true, y_pred, male=None, title: str = ""):
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    colors = None if male is None else np.where(np.asarray(male, bool), "tab:blue", "tab:red")
    ax.scatter(y_true, y_pred, s=8, alpha=0.6, c=colors)
    lim = [0, max(240, y_true.max(), y_pred.max())]
    ax.plot(lim, lim, "k--", lw=1)
    ax.set(xlabel="true bone age (months)", ylabel="predicted (months)", xlim=lim, ylim=lim,
           title=title or f"MAE {np.abs(y_pred - y_true).mean():.1f} months")
    return ax


def plot_bland_altman(ax, y_true, y_pred, title: str = ""):
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    mean, diff = (y_true + y_pred) / 2, y_pred - y_true
    md, sd = diff.mean(), diff.std(ddof=1)
    ax.scatter(mean, diff, s=8, alpha=0.6)
    for v, ls in ((md, "-"), (md + 1.96 * sd, "--"), (md - 1.96 * sd, "--")):
        ax.axhline(v, color="k", ls=ls, lw=1)
    ax.set(xlabel="mean of true and predicted (months)", ylabel="predicted - true (months)",
           title=title or f"Bland-Altman: bias {md:.1f}, limits +/-{1.96 * sd:.1f}")
    return ax
