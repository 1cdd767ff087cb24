"""The learning-rate axis of a sweep: final loss against learning rate per connection, and
the LR sensitivity of each (Wortsman et al. 2023, "Small-scale proxies for large-scale
Transformer training instabilities"): the mean, over the learning rates tried, of the
final loss's excess over the best final loss, with a diverged run, or one that ends above
its initial loss, counted at its initial loss. A flatter, wider basin = a more stable
connection. Used by scripts/report when a sweep has a train.lr axis.
"""
import math
import statistics

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

LR_KEY = "train.lr"


class Point:
    """One run of the sweep: a connection at one learning rate and seed."""

    def __init__(self, run):
        self.seed = run.seed
        self.lr = run.get(LR_KEY)
        self.final = run.final_val()
        self.se = run.final_se()
        self.initial = run.initial_val()
        self.diverged = run.diverged
        self.finished = self.final is not None or self.diverged is not None
        gains = [a for a in (amax_of(e) for e in run.evals) if a]
        self.amax_fwd = max((a["fwd_max"] for a in gains), default=None)
        self.amax_bwd = max((a["bwd_max"] for a in gains), default=None)

    def capped(self):
        """The final loss counted for the sensitivity: the initial loss when the run diverged
        or ended above it (Wortsman et al.)."""
        if self.initial is None:
            return None if self.diverged else self.final
        return self.initial if self.diverged else min(self.final, self.initial)


def amax_of(e):
    return e.get("diagnostics", {}).get("amax") or e.get("amax")


class Curve:
    def __init__(self, label, mode):
        self.label, self.mode = label, mode
        self.points = {}  # lr -> [Point per seed]

    def lrs(self):
        return sorted(self.points)

    def finished(self, lr):
        return [p for p in self.points[lr] if p.finished]

    def mean_capped(self, lr):
        vals = [p.capped() for p in self.finished(lr) if p.capped() is not None]
        return statistics.mean(vals) if vals else None

    def best_lr(self):
        """The learning rate with the lowest final loss (mean over seeds, diverged seeds
        counted at their initial loss)."""
        cands = [(self.mean_capped(lr), lr) for lr in self.lrs() if self.mean_capped(lr) is not None]
        return min(cands)[1] if cands else None

    def largest_stable_lr(self):
        """The largest learning rate up to which no seed diverged: every finished run at it
        and at every smaller learning rate trained to the end. (A connection can diverge at
        one learning rate and survive a larger one by luck; this stops at the first
        divergence.) None when it diverged at the smallest."""
        stable = None
        for lr in self.lrs():
            done = self.finished(lr)
            if not done or any(p.diverged for p in done):
                break
            stable = lr
        return stable

    def sensitivity(self):
        """(mean, sd over seeds, seeds, lrs): per seed, the mean over the learning rates of
        capped final loss − that seed's best capped final loss. Only learning rates every
        seed finished count, so each seed averages over the same range."""
        seeds = sorted({p.seed for ps in self.points.values() for p in ps})
        lrs = [lr for lr in self.lrs() if {p.seed for p in self.finished(lr)} >= set(seeds)
               and all(p.capped() is not None for p in self.finished(lr))]
        if not lrs:
            return None, None, 0, 0
        per_seed = []
        for s in seeds:
            vals = [next(p.capped() for p in self.points[lr] if p.seed == s) for lr in lrs]
            best = min(vals)
            per_seed.append(statistics.mean(v - best for v in vals))
        return (statistics.mean(per_seed), statistics.stdev(per_seed) if len(per_seed) > 1 else None,
                len(per_seed), len(lrs))

    def amax_at(self, lr, key):
        """Mean over the seeds that trained to the end (a diverged run stopped before most
        evaluations, so its maximum says little)."""
        vals = [getattr(p, key) for p in self.points.get(lr, [])
                if getattr(p, key) is not None and p.finished and not p.diverged]
        return statistics.mean(vals) if vals else None


def collect(runs, label_of):
    """Curves (one per connection, in order of first appearance) from the sweep's runs."""
    curves, index = [], {}
    for r in runs:
        label = label_of(r)
        if label not in index:
            index[label] = len(curves)
            curves.append(Curve(label, r.mode))
        lr = r.get(LR_KEY)
        curves[index[label]].points.setdefault(lr, []).append(Point(r))
    return curves


def fmt_lr(lr):
    return "—" if lr is None else "%.3g" % lr


def table(curves):
    lines = ["", "## Learning-rate stability", "",
             "Final whole-validation-set loss per learning rate (mean over the seeds that finished; "
             "**div** = diverged seeds, counted at their initial loss in the mean), the best learning rate, "
             "the largest up to which no seed diverged (at it or any smaller one), the LR sensitivity (mean over the learning rates of the "
             "final loss's excess over the best one, per seed; diverged runs or runs ending above their "
             "initial loss count at the initial loss; ± = sd over seeds) and the largest Amax gains "
             "(composite H_res, max over the run's evaluations, mean over seeds) at the largest stable lr. "
             "The sensitivity depends on the range tried: a best lr at its edge means the basin was not bracketed.", ""]
    lrs = sorted({lr for c in curves for lr in c.points})
    lines += ["| connection | " + " | ".join("lr %s" % fmt_lr(lr) for lr in lrs) +
              " | best lr | largest stable lr | LR sensitivity ± seed sd | Amax fwd / bwd at the largest stable lr |",
              "|---|" + "---|" * len(lrs) + "---|---|---|---|"]
    for c in curves:
        cells = []
        for lr in lrs:
            if lr not in c.points:
                cells.append("")
                continue
            done = c.finished(lr)
            div = sum(1 for p in done if p.diverged)
            m = c.mean_capped(lr)
            text = "%.4f" % m if m is not None else "—"
            if div:
                text += " (%d/%d **div**)" % (div, len(done))
            if len(done) < len(c.points[lr]):
                text += " (%d unfinished)" % (len(c.points[lr]) - len(done))
            cells.append(text)
        sens, sd, k, n = c.sensitivity()
        stable = c.largest_stable_lr()
        fwd, bwd = c.amax_at(stable, "amax_fwd"), c.amax_at(stable, "amax_bwd")
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            c.label, " | ".join(cells), fmt_lr(c.best_lr()),
            fmt_lr(stable) if stable is not None else "none",
            "—" if sens is None else "%.4f%s (%d seeds, %d lrs)" % (sens, " ± %.4f" % sd if sd is not None else "", k, n),
            "— (no H_res)" if fwd is None else "%.4g / %.4g" % (fwd, bwd)))
    largest = max(lrs) if lrs else None
    if not any(p.diverged for c in curves for ps in c.points.values() for p in ps):
        lines += ["", "No run diverged; the largest learning rate tried was %s." % fmt_lr(largest)]
    return lines


def plot(path, curves, colors, title, subtitle):
    fig, (ax, ax_gain) = plt.subplots(1, 2, figsize=(14, 5.8))
    for c in curves:
        lrs = c.lrs()
        xs, means, lo, hi = [], [], [], []
        for lr in lrs:
            vals = [p.capped() for p in c.finished(lr) if p.capped() is not None]
            if not vals:
                continue
            xs.append(lr)
            means.append(statistics.mean(vals))
            lo.append(min(vals))
            hi.append(max(vals))
        col = colors[c.label]
        sens, sd, _, _ = c.sensitivity()
        ax.fill_between(xs, lo, hi, color=col, alpha=0.15, lw=0)
        ax.plot(xs, means, "-o", ms=4, color=col, lw=1.6,
                label="%s (LR sensitivity %s)" % (c.label, "—" if sens is None else
                                                  "%.3f%s" % (sens, " ± %.3f" % sd if sd is not None else "")))
        div = [(lr, p.capped()) for lr in lrs for p in c.finished(lr) if p.diverged and p.capped() is not None]
        if div:
            ax.plot([d[0] for d in div], [d[1] for d in div], "x", ms=10, mew=2.2, color=col)
        gx = [lr for lr in lrs if c.amax_at(lr, "amax_bwd") is not None]
        if gx:
            ax_gain.plot(gx, [c.amax_at(lr, "amax_bwd") for lr in gx], "-o", ms=4, color=col, label=c.label)
            gdiv = [lr for lr in gx if any(p.diverged for p in c.points[lr])]
            ax_gain.plot(gdiv, [c.amax_at(lr, "amax_bwd") for lr in gdiv], "x", ms=10, mew=2.2, color=col)
    for a in (ax, ax_gain):
        a.set_xscale("log")
        a.set_xlabel("peak learning rate (log scale)")
        a.grid(alpha=0.3, which="both")
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
    ax.set_ylabel("final validation loss (nats/token), whole set")
    ax.set_title("Final loss vs learning rate (line: mean over seeds, band: their range;\n"
                 "x: a diverged run, drawn at its initial loss)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="", marker="x", mew=2, color="k"))
    labels.append("diverged (counted at the initial loss)")
    ax.legend(handles, labels, fontsize=8)
    ax_gain.set_yscale("log")
    ax_gain.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
    ax_gain.set_ylabel("max backward Amax gain of the composite H_res")
    ax_gain.set_title("Signal amplification vs learning rate (max over the run's evaluations,\n"
                      "mean over the seeds that did not diverge; 1 = none; x: some seed diverged)", fontsize=10)
    if ax_gain.get_legend_handles_labels()[0]:
        ax_gain.legend(fontsize=8)
    else:
        ax_gain.text(0.5, 0.5, "no H_res in these runs", ha="center", transform=ax_gain.transAxes)
    fig.suptitle("%s\n%s" % (title, subtitle), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
    plt.close(fig)
