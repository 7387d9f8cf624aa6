"""Figure and report of ``batch-size``, drawn from a run directory's files only.

``fig_error.png``: test error against the per-device batch size (log axis, 32 on the left as
in Wu & He's Figure 1), one line per norm. ``report.md``: the table of every run and a
sentence, computed from the numbers, on whether BN degrades at small batches while GN stays
flat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.cifar import read_run
from bnlab.experiments.report import Report, new_figure, pct, renders, save_figure
from bnlab.experiments.rundir import read_json

__all__ = ["render", "verdict"]

_LABEL = {"bn": "BatchNorm", "renorm": "batch renorm", "gn": "GroupNorm", "ln": "LayerNorm"}
_COLOR = {"bn": "tab:blue", "renorm": "tab:green", "gn": "tab:red", "ln": "tab:purple"}


def _label(norm: str, metrics: dict[str, Any], cfg: dict[str, Any]) -> str:
    p = int(metrics.get("world_size") or 1)
    if p > 1 and norm in ("bn", "renorm"):
        sync = cfg.get("bn_sync") == "global"
        return f"{'Sync' if sync else ''}{_LABEL[norm]} ({p} ranks, statistics over " + (
            f"{p} x batch)" if sync else "the rank's batch)"
        )
    return _LABEL.get(norm, norm)


def _lines(runs: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        if r.get("test_error") is not None:
            out.setdefault(r["norm"], {})[int(r["batch_size"])] = float(r["test_error"])
    return out


def verdict(lines: dict[str, dict[int, float]]) -> str | None:
    """Does BN's error grow from the largest to the smallest batch (by 2 points or more) while
    GN's grows by at least 2 points less (Wu & He: BN degrades, GN stays about flat)?"""
    bn, gn = lines.get("bn", {}), lines.get("gn", {})
    common = sorted(set(bn) & set(gn))
    if len(common) < 2:
        return None
    big, small = common[-1], common[0]
    d_bn, d_gn = bn[small] - bn[big], gn[small] - gn[big]
    agrees = d_bn >= 0.02 and d_gn <= d_bn - 0.02
    return (
        f"From batch {big} to {small}, BatchNorm's test error changes by {100 * d_bn:+.1f} "
        f"points ({pct(bn[big])} -> {pct(bn[small])}) and GroupNorm's by {100 * d_gn:+.1f} "
        f"({pct(gn[big])} -> {pct(gn[small])}): "
        + (
            "this agrees with Wu & He (BN degrades at small batches, GN stays about flat)."
            if agrees
            else "this does not show Wu & He's result (BN would degrade by clearly more than GN)."
        )
        + " One seed per point, so differences of a point or two are within noise."
    )


def _reference(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """The reference run's metrics and config (``--reference``), or a note why there are none."""
    ref = cfg.get("reference")
    if not ref:
        return {}, {}, None
    path = Path(ref).expanduser()
    try:
        return read_json(path / "metrics.json"), read_json(path / "config.json"), None
    except (OSError, ValueError) as e:
        return {}, {}, f"Reference run `{ref}` not drawn: {e}"


def _sync_sentence(metrics: dict[str, Any], lines: dict, ref_lines: dict) -> str | None:
    """SyncBN at P ranks x b against one-process BN at P*b and at b (the reference run)."""
    p = int(metrics.get("world_size") or 1)
    if p == 1 or "bn" not in lines or "bn" not in ref_lines:
        return None
    parts = [
        f"per-rank {b}: {pct(e)} (one process at {p * b}: {pct(ref_lines['bn'].get(p * b))}, "
        f"at {b}: {pct(ref_lines['bn'].get(b))})"
        for b, e in sorted(lines["bn"].items(), reverse=True)
    ]
    return (
        f"BN over {p} ranks against one-process BN (reference run): " + "; ".join(parts) + ". "
        "Synchronized statistics make P x b the batch BN sees, so SyncBN should track the "
        "one-process run at P x b (the same arithmetic up to the order of the sums, which "
        "makes runs of hundreds of steps drift apart by about the noise of one seed)."
    )


def _plot(run_dir: Path, lines: dict[str, dict[int, float]], labels: dict[str, str],
          tag: str) -> str:  # fmt: skip
    fig, axes = new_figure(size=(8.4, 4.2))
    ax = axes[0, 0]
    sizes: set[int] = set()
    for key, pts in lines.items():
        xs = sorted(pts, reverse=True)
        sizes |= set(xs)
        norm = key.removeprefix("ref:")
        style = "s--" if key.startswith("ref:") else "o-"
        ax.plot(xs, [100 * pts[x] for x in xs], style, color=_COLOR.get(norm), label=labels[key])
    ax.set_xscale("log", base=2)
    if sizes:
        ax.set_xticks(sorted(sizes), [str(s) for s in sorted(sizes)])
        ax.set_xlim(max(sizes) * 1.3, min(sizes) / 1.3)  # large batches on the left
    ax.set_xlabel("batch size per device")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"Error vs batch size ({tag})", fontsize=10)
    save_figure(fig, run_dir / "fig_error.png")
    return "fig_error.png"


@renders
def render(run_dir: str | Path) -> None:
    """Draw the figure and write report.md/report.html."""
    rd, cfg, metrics, src, tag = read_run(run_dir, runs=[])
    runs: list[dict[str, Any]] = metrics.get("runs") or []
    lines = _lines(runs)
    labels = {n: _label(n, metrics, cfg) for n in {r["norm"] for r in runs}}
    rep = Report(f"Test error against batch size: BN, renorm, GN, LN ({tag})")
    wall = metrics.get("wall_time_s")
    rep.paragraph(
        f"Status: **{metrics.get('status')}**, {len(runs)} runs, net {cfg.get('net')}, "
        f"{metrics.get('n_train', '?')} training and {metrics.get('n_test', '?')} test images, "
        f"{cfg.get('epochs')} epochs per run, {metrics.get('world_size', 1)} process(es)"
        + (f", wall time {wall:.0f} s." if isinstance(wall, int | float) else ".")
    )
    rep.paragraph(
        "The claim (Wu & He 2018, Figure 1, ResNet-50 on ImageNet): BN's error rises sharply "
        "as the batch per device goes from 32 to 2; GN's stays flat (and LN is flat but worse)."
    )
    rep.heading("Results")
    ref_m, ref_cfg, ref_note = _reference(cfg)
    ref_lines = _lines(ref_m.get("runs") or [])
    text = verdict(lines) or (verdict(ref_lines) and "Reference run: " + str(verdict(ref_lines)))
    for para in (text, _sync_sentence(metrics, lines, ref_lines), ref_note):
        if para:
            rep.paragraph(para)
    drawn = {**lines, **{f"ref:{n}": v for n, v in ref_lines.items()}}
    labels.update({f"ref:{n}": _label(n, ref_m, ref_cfg) + " (reference)" for n in ref_lines})
    if drawn:
        rep.figure(_plot(rd.path, drawn, labels, tag), f"Test error vs batch size ({tag})")
    rows = [
        [labels.get(r["norm"], r["norm"]), r["batch_size"], r.get("global_batch"),
         r.get("steps"), r.get("lr"), pct(r.get("test_error")), r.get("time_s"),
         r.get("error") or ""]
        for r in runs
    ]  # fmt: skip
    rep.table(["norm", "batch/device", "global batch", "steps", "lr", f"test error ({tag})",
               "s", "stopped"], rows)  # fmt: skip
    rep.heading("Setup")
    rep.bullets(_notes(cfg, src, metrics))
    rd.write_report(rep)


def _notes(cfg: dict[str, Any], src: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    jpeg = src.get("encoding") == "JPEG"
    return [
        f"Data: `{src.get('path')}`, {src.get('format')}"
        + (f", JPEG quality {src.get('jpeg_quality')} (not the original pixels)." if jpeg else "."),
        f"Net {cfg.get('net')} (cnn3: conv 16 / 32 s2 / 64 s2 + norm + ReLU, average pool, "
        f"Dense 10); GroupNorm {cfg.get('gn_groups')} groups (or the channels if fewer); "
        "LayerNorm = GroupNorm with one group (Wu & He's conv-net LN).",
        f"Every run: seed {cfg.get('seed')}, {cfg.get('epochs')} epochs, SGD momentum "
        f"{cfg.get('momentum')}, lr {cfg.get('lr')} x global batch / 32, /10 after 3/4 of the "
        f"steps, weight decay {cfg.get('weight_decay')}; per-pixel mean, pad-4 crops, flips.",
        "Wu & He's setting: ResNet-50, ImageNet, 8 GPUs, BN statistics per GPU. Ours: one "
        "process is one device; under mpiexec -n P each rank is a device, and "
        "`--bn-sync global` turns BN into SyncBN (statistics over P x batch).",
    ]
