"""The picture behind `sslrecon noise --plot`: the mean-variance fit and the noise autocorrelation.

matplotlib is imported here only (Agg backend, no display needed), so the rest of the package never
pays for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .estimate import LAGS, NoiseReport


def plot_report(report: NoiseReport, path: Path, title: str = "") -> None:
    """Write the PNG to `path` (the caller makes the write atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.5, 1]})
    fit = report.fit
    if fit is not None:
        used, texture = fit.bin_used & ~fit.bin_texture, fit.bin_texture
        ax.scatter(fit.bin_mean[used], fit.bin_var[used], s=28, color="tab:blue", label="local noise variance, binned")
        if texture.any():
            ax.scatter(fit.bin_mean[texture], fit.bin_var[texture], s=36, marker="^", color="tab:purple",
                       label="lifted by texture (not fitted)")
        near = ~fit.bin_used & (fit.bin_count > 0)  # (empty bins are not drawn)
        if near.any():
            ax.scatter(fit.bin_mean[near], fit.bin_var[near], s=28, marker="x", color="tab:gray",
                       label="near clipping (not fitted)")
        ax.scatter(fit.heldout_mean, fit.heldout_var, s=18, facecolors="none", edgecolors="tab:orange",
                   label=f"held-out half (R\u00b2 {fit.r2_heldout:.3f} for a line fitted on the other)")
        hi = float(np.nanmax(fit.bin_mean)) * 1.05
        lo = min(0.0, float(np.nanmin(fit.bin_mean)))
        xs = np.linspace(lo, hi, 200)
        model_var = report.model.variance(torch.as_tensor(xs)).numpy()
        ax.plot(xs, model_var, color="tab:red", label=f"model: {report.model.spec()}")
        ax.plot(xs, fit.predict(xs), color="tab:red", ls="--", lw=1,
                label=f"line: var = {fit.slope:.4g} \u00b7 mean {fit.intercept:+.4g}")
        for level in (report.clipping.low, report.clipping.high):
            if level is not None and lo <= level <= hi:
                ax.axvline(level, color="tab:gray", ls=":", lw=1, label=f"clipped at {level:g}")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("local mean (data units)")
        ax.set_ylabel("noise variance (data units\u00b2)")
        ax.legend(fontsize=7, loc="upper left")
    else:
        counts = report.counts
        ax.text(0.5, 0.5, "no mean-variance fit" if counts is None else
                f"counts too sparse for a mean-variance fit:\n{100 * counts.dark_share:.1f} % of pixels read "
                f"{counts.model.offset:g},\nvariance / mean above it {counts.dispersion:.4g} \u00b1 {counts.se:.2g}",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"{report.kind}: {report.model.spec()}", fontsize=9)
    acf = report.correlation.acf
    shown = acf.copy()
    shown[LAGS, LAGS] = np.nan  # lag 0 is 1 by definition; leave the colour scale to the others
    lim = max(0.1, float(np.nanmax(np.abs(shown))))
    im = bx.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim,
                   extent=(-LAGS - 0.5, LAGS + 0.5, LAGS + 0.5, -LAGS - 0.5))
    for (r, c), v in np.ndenumerate(acf):
        bx.text(c - LAGS, r - LAGS, f"{v:.2f}", ha="center", va="center", fontsize=8)
    bx.set_xlabel("horizontal lag (pixels)")
    bx.set_ylabel("vertical lag (pixels)")
    bx.set_title("noise autocorrelation (white noise: 0 off centre)", fontsize=9)
    fig.colorbar(im, ax=bx, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
