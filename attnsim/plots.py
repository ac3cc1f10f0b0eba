"""Figures (matplotlib, Agg): results tables in, PNG and PDF files out."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from attnsim import sweep  # noqa: E402

INIT_STYLE = {"random": ("tab:orange", "s"), "semantic": ("tab:blue", "o"), "positional": ("tab:green", "^")}


def _mean_std(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df.groupby("alpha")[column].agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})


def plot_test_error(results: pd.DataFrame, path: Path, theory: pd.DataFrame | None = None) -> list[Path]:
    """Test error vs alpha, one panel per (omega, sigma, lam): mean +- std over seeds per init, the
    empirical global minimum (per seed, the init with the lowest train_loss) and the linear baseline.
    ``theory`` (optional, rows of attnsim.theory.solve) adds the branches as lines."""
    ok = results[~results.diverged.astype(bool)]
    panels = list(ok.groupby(["omega", "sigma", "lam"]))
    cols = min(3, max(1, len(panels)))
    rows = -(-max(1, len(panels)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2, 3.6 * cols), 2.9 * rows + 0.8), squeeze=False)
    gmin = sweep.global_minimum(ok)
    for ax, ((omega, sigma, lam), df) in zip(axes.flat, panels):
        _init_points(ax, df, "test_error")
        g = gmin[(gmin.omega == omega) & (gmin.sigma == sigma) & (gmin.lam == lam)]
        s = _mean_std(g, "test_error")
        ax.errorbar(s["alpha"], s["mean"], yerr=s["std"], color="black", marker="*", ms=7, lw=1.4, capsize=2,
                    label="global min (lowest train loss)")
        s = _mean_std(df, "lin_test_error")
        ax.plot(s["alpha"], s["mean"], color="gray", ls="--", lw=1.2, label="linear baseline $Bx$")
        if theory is not None:
            _theory_lines(ax, theory, omega, sigma, lam)
        ax.set_title(rf"$\omega={omega:g}$, $\sigma={sigma:g}$, $\lambda={lam:g}$", fontsize=9)
        ax.set_xlabel(r"sample complexity $\alpha = n/d$")
        ax.set_ylabel(r"test error $\mathbb{E}\|y-f(x)\|^2/2d$")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    ncol = min(len(labels), 2 * cols)
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="lower center", ncol=ncol)
    legend_rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, 0.045 * legend_rows / rows ** 0.5, 1, 1))
    return _save(fig, path)


def plot_overlaps(results: pd.DataFrame, path: Path, theory: pd.DataFrame | None = None) -> list[Path]:
    """|theta| and |m| vs alpha per init (mean +- std over seeds), one row per (omega, sigma, lam), with the
    theory's branches when given."""
    ok = results[~results.diverged.astype(bool)]
    panels = list(ok.groupby(["omega", "sigma", "lam"]))
    fig, axes = plt.subplots(len(panels), 2, figsize=(7.2, 2.7 * len(panels) + 0.6), squeeze=False)
    for row, ((omega, sigma, lam), df) in zip(axes, panels):
        for ax, col, label in ((row[0], "theta", r"$|\theta|$"), (row[1], "m", r"$|m|$")):
            _init_points(ax, df, col)
            if theory is not None:
                _theory_lines(ax, theory, omega, sigma, lam, col)
            ax.set_xlabel(r"$\alpha = n/d$")
            ax.set_ylabel(label)
            ax.set_title(rf"$\omega={omega:g}$, $\sigma={sigma:g}$, $\lambda={lam:g}$", fontsize=9)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="lower center", ncol=min(4, len(labels)))
    fig.tight_layout(rect=(0, 0.08 / len(panels) ** 0.5, 1, 1))
    return _save(fig, path)


def _init_points(ax, df: pd.DataFrame, column: str) -> None:
    """Mean +- std over seeds of ``column`` vs alpha, one series per init."""
    for init, sub in df.groupby("init"):
        color, marker = INIT_STYLE.get(init, ("gray", "x"))
        s = _mean_std(sub, column)
        ax.errorbar(s["alpha"], s["mean"], yerr=s["std"], color=color, marker=marker, ms=4, lw=0.8,
                    capsize=2, ls=":", label=f"{init} init")


def _theory_lines(ax, theory: pd.DataFrame, omega, sigma, lam, column: str = "test_error") -> None:
    """|column| of the converged semantic and positional branches at (omega, sigma, lam) vs alpha."""
    th = theory[(theory.omega == omega) & (theory.sigma == sigma) & (theory.lam == lam)
                & theory.converged.astype(bool)]
    for branch, color in (("semantic", "tab:blue"), ("positional", "tab:orange")):
        b = th[th.branch == branch].sort_values("alpha")
        ax.plot(b.alpha, b[column].abs(), color=color, lw=1.0, alpha=0.8, label=f"theory, {branch}")


def _save(fig, path: Path) -> list[Path]:
    path = Path(path)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=200)
    fig.savefig(out[1])
    plt.close(fig)
    return out
