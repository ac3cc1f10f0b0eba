"""Figures (matplotlib, Agg): results tables in, PNG and PDF files out.

Every figure is sized for a paper column (3.4 in per panel) and saved as PNG (200 dpi) and PDF. A workdir
may hold several d (see report.read_workdir): panels are then per (omega, sigma, lam, d).
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from attnsim import report, sweep  # noqa: E402

INIT_STYLE = {"random": ("tab:orange", "s"), "semantic": ("tab:blue", "o"), "positional": ("tab:green", "^"),
              "mixed": ("tab:purple", "D")}
BRANCH_COLOR = {"semantic": "tab:blue", "positional": "tab:orange", "mixed": "tab:purple"}
TEST_ERROR = r"test error $\varepsilon_g$"
ALPHA = r"sample complexity $\alpha = n/d$"
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
      "ytick.labelsize": 7}


def _styled(plot):
    """Run a figure function under RC (column-width font sizes) without touching the global rcParams."""

    @functools.wraps(plot)
    def wrapped(*args, **kwargs):
        with plt.rc_context(RC):
            return plot(*args, **kwargs)

    return wrapped


def _mean_sem(df: pd.DataFrame, column: str, by: str = "alpha") -> pd.DataFrame:
    """Mean and standard error of the mean (std / sqrt(count); 0 for one seed) of ``column`` per ``by``:
    the one error-bar convention of every figure, said in the legends."""
    s = df.groupby(by)[column].agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})
    s["sem"] = s["std"] / np.sqrt(s["count"])
    return s


def _seeds(df: pd.DataFrame) -> str:
    n = int(df.groupby([c for c in ("d", "omega", "sigma", "lam", "alpha", "init", "step") if c in df]).size().max())
    return f"{n} seed" + ("s" if n != 1 else "")


def _offset(ax_index: int, count: int, alphas) -> float:
    """A small shift in alpha of series ax_index of count, so that overlapping series stay visible."""
    a = np.unique(np.asarray(alphas, float))
    step = np.min(np.diff(a)) if len(a) > 1 else max(abs(a[0]), 1.0)
    return (ax_index - (count - 1) / 2) * 0.06 * step


def _panels(results: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """Non-diverged runs split into curves in alpha: per (omega, sigma, lam), and per d if there are several."""
    ok = report.ok_runs(results)
    keys = report.GROUP if ok.d.nunique() > 1 else report.GROUP[:-1]
    return [(dict(zip(keys, k)), df) for k, df in ok.groupby(keys)]


def _title(key: dict, df: pd.DataFrame | None = None) -> str:
    """The panel's parameters; with its runs ``df``, also d (when not in key) and the seed count."""
    names = {"omega": r"\omega", "sigma": r"\sigma", "lam": r"\lambda", "d": "d", "alpha": r"\alpha"}
    text = ", ".join(rf"${names[k]}={v:g}$" for k, v in key.items())
    if df is not None and len(df):
        if "d" not in key and "d" in df and df.d.nunique() == 1:
            text += f", $d={int(df.d.iloc[0])}$"
        text += f", {_seeds(df)}"
    return text


def _grid(n: int, width: float = 3.4, height: float = 2.6, max_cols: int = 3):
    cols = min(max_cols, max(1, n))
    rows = -(-max(1, n) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.5), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


ERROR_BARS = "error bars: standard error of the mean over seeds"


def _legend_below(fig, axes, rows: int, title: str | None = ERROR_BARS) -> None:
    """One legend for the figure (from the first panel), under the panels, titled with the error-bar
    convention."""
    handles, labels = axes.flat[0].get_legend_handles_labels()
    ncol = min(len(labels), 2 * axes.shape[1])
    fig.legend(handles, labels, frameon=False, loc="lower center", ncol=max(1, ncol), title=title,
               title_fontsize=7)
    legend_rows = -(-len(labels) // max(1, ncol)) + 1  # + the title
    fig.tight_layout(rect=(0, min(0.45, 0.05 * legend_rows / rows ** 0.5), 1, 1))


@_styled
def plot_test_error(results: pd.DataFrame, path: Path, theory: pd.DataFrame | None = None,
                    phase: pd.DataFrame | None = None) -> list[Path]:
    """Test error vs alpha, one panel per curve: mean +- s.e.m. over seeds per init, the empirical global minimum
    (per seed, the init with the lowest train_loss) and the linear baseline. ``theory`` (rows of
    attnsim.theory.solve) adds the branches (solid where the global minimum, dashed where not) and the
    baseline's population error; ``phase`` (attnsim.theory.critical_lines) marks alpha_c and alpha_l."""
    panels = _panels(results)
    fig, axes = _grid(len(panels))
    gmin = sweep.global_minimum(report.ok_runs(results))
    for ax, (key, df) in zip(axes.flat, panels):
        _init_points(ax, df, "test_error")
        s = _mean_sem(gmin[(gmin[list(key)] == pd.Series(key)).all(axis=1)], "test_error")
        ax.errorbar(s["alpha"], s["mean"], yerr=s["sem"], color="black", marker="*", ms=6, lw=1.2, capsize=2,
                    label="global min (lowest train loss)")
        s = _mean_sem(df, "lin_test_error")
        ax.plot(s["alpha"], s["mean"], color="gray", marker=".", ls=":", lw=1.0, label=r"linear $Bx$")
        point = {k: key[k] for k in ("omega", "sigma", "lam")}
        th = report.select(theory, **point)
        _theory_lines(ax, th, "test_error", global_style=True)
        if "lin_test_error" in th and len(th):
            ax.axhline(th.lin_test_error.iloc[0], color="gray", lw=1.0, label=r"theory, linear $Bx$")
        _critical_marks(ax, report.select(phase, **point))
        ax.set_title(_title(key, df))
        ax.set_xlabel(ALPHA)
        ax.set_ylabel(TEST_ERROR)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes, axes.shape[0])
    return _save(fig, path)


@_styled
def plot_overlaps(results: pd.DataFrame, path: Path, theory: pd.DataFrame | None = None) -> list[Path]:
    """|theta| and |m| vs alpha per init (mean +- s.e.m. over seeds), one row per curve, with the theory's
    branches when given."""
    panels = _panels(results)
    fig, axes = plt.subplots(len(panels), 2, figsize=(6.8, 2.4 * len(panels) + 0.5), squeeze=False)
    for row, (key, df) in zip(axes, panels):
        th = report.select(theory, **{k: key[k] for k in ("omega", "sigma", "lam")})
        for ax, col, label in ((row[0], "theta", r"semantic overlap $|\theta|$"),
                               (row[1], "m", r"positional overlap $|m|$")):
            _init_points(ax, df, col)
            _theory_lines(ax, th, col)
            ax.set_xlabel(ALPHA)
            ax.set_ylabel(label)
            ax.set_title(_title(key, df))
            ax.grid(alpha=0.3)
    _legend_below(fig, axes, len(panels))
    return _save(fig, path)


@_styled
def plot_phase_diagram(results: pd.DataFrame, path: Path, phase: pd.DataFrame | None = None,
                       empirical: pd.DataFrame | None = None) -> list[Path]:
    """Over the (alpha, omega) plane, per (sigma, lam, d): the mean over seeds of the empirical global
    minimum's test error minus the linear baseline's (blue: attention wins), with the theory's alpha_c(omega)
    and alpha_l(omega) (``phase``) and the simulations' estimates (``empirical``, report.empirical_lines)."""
    ok = report.ok_runs(results)
    at = report.GROUP + ["alpha"]
    gap = (sweep.global_minimum(ok).groupby(at).test_error.mean() - ok.groupby(at).lin_test_error.mean())
    gap = gap.rename("gap").reset_index()
    groups = list(gap.groupby(["sigma", "lam", "d"]))
    fig, axes = _grid(len(groups), width=3.6, height=2.9, max_cols=2)
    for ax, ((sigma, lam, d), g) in zip(axes.flat, groups):
        table = g.pivot(index="omega", columns="alpha", values="gap")
        values = np.ma.masked_invalid(table.to_numpy())
        span = max(float(np.nanmax(np.abs(table.to_numpy()))), 1e-12)
        mesh = ax.pcolormesh(_edges(table.columns), _edges(table.index), values, cmap="RdBu_r",
                             norm=TwoSlopeNorm(0.0, -span, span), shading="flat")
        bar = fig.colorbar(mesh, ax=ax, pad=0.02)
        bar.set_label(r"$\varepsilon_g^{\rm attention} - \varepsilon_g^{\rm linear}$")
        bar.formatter.set_powerlimits((-2, 2))
        p = report.select(phase, sigma=sigma, lam=lam)
        for col, style, label in (("alpha_c", "-", r"theory $\alpha_c(\omega)$"), ("alpha_l", "--", r"theory $\alpha_l(\omega)$")):
            if len(p):
                p = p.sort_values("omega")
                ax.plot(p[col], p.omega, color="black", ls=style, lw=1.4, label=label)
        e = report.select(empirical, sigma=sigma, lam=lam, d=d)
        for col, marker, label in (("alpha_c", "o", r"simulation $\alpha_c$"), ("alpha_l", "^", r"simulation $\alpha_l$")):
            if len(e):
                ax.plot(e[col], e.omega, ls="none", marker=marker, ms=5, mfc="white", mec="black", label=label)
        alphas, omegas = np.asarray(table.columns, float), np.asarray(table.index, float)
        if len(alphas) > 1:  # the cells cover the simulated alphas, not half a cell beyond them
            ax.set_xlim(alphas[0], alphas[-1])
        if len(omegas) > 1:
            ax.set_ylim(omegas[0], omegas[-1])
        ax.set_xlabel(ALPHA)
        ax.set_ylabel(r"positional weight $\omega$")
        ax.set_title(_title({"sigma": sigma, "lam": lam, "d": d}) + f", {_seeds(ok[ok.d == d])}")
    _legend_below(fig, axes, axes.shape[0], title=None)
    return _save(fig, path)


@_styled
def plot_scaling(table: pd.DataFrame, path: Path) -> list[Path]:
    """Finite-size convergence, per (omega, sigma, lam, alpha): left, |simulation mean / theory - 1| of the
    test error vs d (log axes; error bars: standard error over seeds), with d^{-1/2} and d^{-1} guides; right, the mean
    test error vs d with the theory. ``table``: report.summary with a theory and several d."""
    t = table[np.isfinite(table.theory_test_error)]
    curves = list(t.groupby(report.POINT))
    fig, axes = plt.subplots(len(curves), 2, figsize=(6.8, 2.5 * len(curves) + 0.5), squeeze=False)
    for (ax_dev, ax_te), (point, c) in zip(axes, curves):
        for who, w in c.groupby("who"):
            color, marker = INIT_STYLE.get(who, ("black", "*"))
            w = w.sort_values("d")
            sem = w.test_error_std.fillna(0) / np.sqrt(w.seeds)
            label = "global min" if who == "global" else f"{who} init"
            ax_dev.errorbar(w.d, w.rel_diff.abs(), yerr=sem / w.theory_test_error, color=color, marker=marker,
                            ms=4, lw=1.0, capsize=2, label=label)
            ax_te.errorbar(w.d, w.test_error, yerr=sem, color=color, marker=marker, ms=4, lw=1.0, capsize=2,
                           label=label)
            ax_te.axhline(w.theory_test_error.iloc[0], color=color, lw=0.8, ls="--")
        d = np.sort(c.d.unique()).astype(float)
        anchor = c[c.who == "global"].sort_values("d").rel_diff.abs().iloc[0] if (c.who == "global").any() else 1.0
        for power, style, label in ((0.5, ":", r"$\propto d^{-1/2}$"), (1.0, "--", r"$\propto d^{-1}$")):
            ax_dev.plot(d, anchor * (d[0] / d) ** power, color="gray", ls=style, lw=1.0, label=label)
        ax_dev.set(xscale="log", yscale="log", xlabel="dimension $d$",
                   ylabel=r"$|\varepsilon_g^{\rm sim}/\varepsilon_g^{\rm theory} - 1|$")
        ax_te.set(xscale="log", xlabel="dimension $d$", ylabel=TEST_ERROR + " (dashed: theory)")
        for ax in (ax_dev, ax_te):
            ax.set_title(_title(dict(zip(report.POINT, point))) + f", {int(c.seeds.max())} seeds")
            ax.grid(alpha=0.3, which="both")
    _legend_below(fig, axes, len(curves))
    return _save(fig, path)


@_styled
def plot_curves(curves: pd.DataFrame, path: Path) -> list[Path]:
    """Learning curves (curves.csv): train_loss, |m|, |theta|, q against the training step, one row of
    panels per (omega, sigma, lam), one line per (alpha, init): the mean over seeds (shaded: +- s.e.m.)."""
    groups = list(curves.groupby(["omega", "sigma", "lam"]))
    fig, axes = plt.subplots(len(groups), 4, figsize=(10.4, 2.3 * len(groups) + 0.7), squeeze=False)
    alphas = np.sort(curves.alpha.unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(alphas)))
    styles = dict(zip(INIT_STYLE, ("-", "--", ":")))
    for row, ((omega, sigma, lam), g) in zip(axes, groups):
        for (alpha, init), c in g.groupby(["alpha", "init"]):
            color = colors[int(np.searchsorted(alphas, alpha))]
            for ax, col in zip(row, ("train_loss", "m", "theta", "q")):
                s = _mean_sem(c.assign(**{col: c[col].abs()}), col, by="step")
                ax.plot(s.step, s["mean"], color=color, ls=styles.get(init, "-"), lw=1.0,
                        label=f"$\\alpha={alpha:g}$, {init} init")
                ax.fill_between(s.step, s["mean"] - s["sem"], s["mean"] + s["sem"], color=color, alpha=0.15, lw=0)
        for ax, label in zip(row, ("train loss $R/d$", r"$|m|$", r"$|\theta|$", "$q$")):
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.set_title(_title({"omega": omega, "sigma": sigma, "lam": lam}) + f", {_seeds(g)}")
            ax.grid(alpha=0.3)
        row[0].set_yscale("log")
    _legend_below(fig, axes, len(groups), title="lines: mean over seeds; shaded: standard error of the mean")
    return _save(fig, path)


def _edges(centres) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; the outer cells as wide as their neighbour)."""
    c = np.asarray(centres, float)
    if len(c) == 1:
        return np.array([c[0] - 0.5 * abs(c[0] or 1), c[0] + 0.5 * abs(c[0] or 1)])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.r_[c[0] - (mid[0] - c[0]), mid, c[-1] + (c[-1] - mid[-1])]


def _init_points(ax, df: pd.DataFrame, column: str) -> None:
    """Mean +- s.e.m. over seeds of |column| vs alpha, one series per init, each shifted a little in alpha
    (and with its own marker) so that series that coincide stay visible."""
    inits = list(df.groupby("init"))
    for i, (init, sub) in enumerate(inits):
        color, marker = INIT_STYLE.get(init, ("gray", "x"))
        s = _mean_sem(sub.assign(**{column: sub[column].abs()}), column)
        ax.errorbar(s["alpha"] + _offset(i, len(inits), df.alpha), s["mean"], yerr=s["sem"], color=color,
                    marker=marker, ms=4, mfc="none" if i % 2 else color, lw=0.8, capsize=2, ls=":",
                    label=f"{init} init")


def _theory_lines(ax, th: pd.DataFrame, column: str = "test_error", global_style: bool = False) -> None:
    """|column| of the converged semantic and positional branches of ``th`` (one curve's theory rows) vs
    alpha; with ``global_style``, solid where the branch is the global minimum and dashed where not."""
    if th is None or th.empty:
        return
    th = th[th.converged.astype(bool)]
    for branch, color in BRANCH_COLOR.items():
        b = th[th.branch == branch].sort_values("alpha")
        if b.empty:
            continue
        y = b[column].abs().to_numpy()
        if global_style and "global_min" in b:
            ax.plot(b.alpha, y, color=color, lw=1.0, ls="--", alpha=0.8)
            ax.plot(b.alpha, np.where(b.global_min.astype(bool), y, np.nan), color=color, lw=1.6,
                    label=f"theory, {branch}")
        else:
            ax.plot(b.alpha, y, color=color, lw=1.2, alpha=0.8, label=f"theory, {branch}")


def _critical_marks(ax, phase_row: pd.DataFrame) -> None:
    """Vertical lines at the theory's alpha_c and alpha_l (one phase.csv row)."""
    if phase_row is None or phase_row.empty:
        return
    for col, style, label in (("alpha_c", "-.", r"$\alpha_c$"), ("alpha_l", ":", r"$\alpha_l$")):
        value = phase_row[col].iloc[0]
        if np.isfinite(value):
            ax.axvline(value, color="black", ls=style, lw=0.9, label=label)


def _save(fig, path: Path) -> list[Path]:
    path = Path(path)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=200)
    fig.savefig(out[1])
    plt.close(fig)
    return out


VARIANT_STYLE = {"positional": ("tab:orange", "s"), "semantic": ("tab:blue", "o"), "free": ("black", "*")}


@_styled
def plot_histogram_accuracy(results: pd.DataFrame, path: Path, length: int = 10, alphabet: int = 15) -> list[Path]:
    """The histogram task against training-set size, per variant (mean +- s.e.m. over seeds): validation
    accuracy (per token); the same-token attention (on keys holding the query's token, itself included) and
    the self-attention (on the query's own position), with their values for uniform attention; the token
    dependence of the attention (0: a positional mechanism)."""
    ok = report.ok_runs(results)
    panels = [("val_accuracy", "validation accuracy (per token)"), ("same_token_attention", "same-token attention"),
              ("self_attention", "self-attention"), ("token_dependence", "token dependence of the attention")]
    fig, axes = plt.subplots(2, 2, figsize=(6.8, 5.2), squeeze=False)
    seeds = int(ok.groupby(["variant", "n_train"]).size().max())
    for variant in [v for v in VARIANT_STYLE if v in set(ok.variant)]:
        df = ok[ok.variant == variant]
        color, marker = VARIANT_STYLE[variant]
        for ax, (column, _) in zip(axes.flat, panels):
            s = _mean_sem(df, column, by="n_train")
            ax.errorbar(s["n_train"], s["mean"], yerr=s["sem"], color=color, marker=marker, ms=4, lw=1.0,
                        capsize=2, label=variant)
    for ax, (_, label) in zip(axes.flat, panels):
        ax.set_xscale("log")
        ax.set_xlabel("training sequences $n$")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 1].axhline((1 + (length - 1) / alphabet) / length, color="gray", ls=":", lw=1.0)
    axes[1, 0].axhline(1 / length, color="gray", ls=":", lw=1.0, label="uniform attention")
    fig.suptitle(f"histogram task (length {length}, alphabet {alphabet}), {seeds} seed" + ("s" if seeds != 1 else "")
                 + " per point", fontsize=8)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, frameon=False, loc="lower center", ncol=len(labels), title=ERROR_BARS, title_fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


@_styled
def plot_attention_maps(attention: pd.DataFrame, path: Path, n_train: int | None = None, seed: int = 0) -> list[Path]:
    """Attention maps (rows: queries, columns: keys, labelled by token) of one run per variant (``seed`` at
    ``n_train``, default the largest) on the recorded validation sequences; a dot marks a key holding the
    query's own token."""
    n_train = n_train or int(attention.n_train.max())
    one = attention[(attention.n_train == n_train) & (attention.seed == seed)]
    variants = [v for v in ("positional", "semantic", "free") if v in set(one.variant)]
    examples = sorted(one.example.unique())
    fig, axes = plt.subplots(len(variants), len(examples), figsize=(1.6 * len(examples) + 0.8, 1.6 * len(variants) + 0.5),
                             squeeze=False, layout="constrained")
    for row, variant in zip(axes, variants):
        for ax, ex in zip(row, examples):
            cell = one[(one.variant == variant) & (one.example == ex)]
            L = int(cell["query"].max()) + 1
            W = np.zeros((L, L))
            W[cell["query"].to_numpy(), cell["key"].to_numpy()] = cell["weight"].to_numpy()
            tokens = cell[cell["query"] == 0].sort_values("key").key_token.to_numpy()
            im = ax.imshow(W, vmin=0, vmax=1, cmap="viridis")
            same = cell[cell.query_token == cell.key_token]
            ax.plot(same["key"], same["query"], "w.", ms=2.5)
            ax.set_xticks(range(L), [str(t) for t in tokens], fontsize=5)
            ax.set_yticks(range(L), [str(t) for t in tokens], fontsize=5)
            if ex == examples[0]:
                ax.set_ylabel(f"{variant}\nquery token", fontsize=7)
            if variant == variants[-1]:
                ax.set_xlabel("key token", fontsize=7)
    fig.suptitle(f"attention maps, seed {seed}, n = {n_train} (dots: same token as the query)", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    return _save(fig, path)
