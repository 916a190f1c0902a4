"""`python -m bench report`: a static HTML page of the leaderboard.

Sections: the leaderboard tables (with the published numbers of reported.csv), then per
dataset a grid of the same test images with every method's CAM overlaid (ground truth on the
first row), box accuracy against the CAM threshold (box datasets) and precision-recall curves
(mask datasets) per method, and the kernel speed tables of leaderboard/kernels.md. Figures are
matplotlib PNGs under `<out>/figures/`; CAMs and curves come from the per-cell artifacts the
runner writes (`bench.artifacts`), averaged over seeds for the curves, the lowest seed for the
CAMs. Entries without artifacts (written before they existed) are listed, not drawn.
"""
from __future__ import annotations

import datetime as _dt
import html
import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.artifacts import ArtifactError, curves_of, load_npz
from bench.entries import entry_files
from bench.io import atomic_write_text, results_lock
from bench.leaderboard import REPORTED_CSV, SHOWN, fmt_mean_std, load_reported, load_results, summarize

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0} td.name{text-align:left} tr.reported td{color:#666;font-style:italic}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0} .note{color:#666;font-size:.9em}
nav a{margin-right:1em}
"""


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("the report draws with matplotlib: pip install -e '.[report]'") from None
    return plt


def _save(fig, path: Path) -> None:
    import io

    from bench.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    _plt().close(fig)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _artifacts(records: list[dict]) -> dict[str, dict[str, list[tuple[dict, Path]]]]:
    """dataset -> method -> [(entry, npz path)] of finished entries with artifacts, by seed."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in sorted(records, key=lambda r: r["seed"]):
        art = r.get("artifacts")
        if r.get("status") == "ok" and art and (Path(r["_path"]).parent / art["file"]).is_file():
            out[r["dataset"]][r["method"]].append((r, Path(r["_path"]).parent / art["file"]))
    return out


def _load_or_warn(path: Path) -> dict:
    """The arrays of an artifact file, or none (with a warning naming it) when it cannot be
    loaded: one bad file leaves its figure out, not the whole report."""
    try:
        return load_npz(path)
    except ArtifactError as err:
        log.warning("artifact left out of the report: %s", err)
        return {}


def sample_grid(dataset: str, methods: list[str], cells: dict, results_dir: Path, path: Path) -> Path | None:
    """Rows: the images with their ground truth, then one row per method (its CAM overlaid)."""
    plt = _plt()
    chosen = []  # (method, cams) sharing one samples file
    samples_name = None
    for m in methods:
        for entry, npz in cells.get(m, []):
            name = entry["artifacts"].get("samples")
            if name and (samples_name is None or name == samples_name):
                arrays = _load_or_warn(npz)
                if "cams" in arrays:
                    samples_name = name
                    chosen.append((m, arrays["cams"]))
                    break
    if not chosen or not (results_dir / dataset / samples_name).is_file():
        return None
    shared = _load_or_warn(results_dir / dataset / samples_name)
    if not shared:
        return None
    images, k = shared["images"], shared["images"].shape[0]
    rows = 1 + len(chosen)
    fig, axes = plt.subplots(rows, k, figsize=(1.7 * k + 1.2, 1.7 * rows), squeeze=False)
    for col in range(k):
        ax = axes[0, col]
        ax.imshow(images[col])
        if "boxes" in shared:
            for _, x0, y0, x1, y1 in shared["boxes"][shared["boxes"][:, 0] == col]:
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        if "masks" in shared:
            fg = (shared["masks"][col] == 1).astype(float)
            if fg.any():
                ax.contour(fg, levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f"label {int(shared['labels'][col])}", fontsize=8)
        for row, (m, cams) in enumerate(chosen, start=1):
            ax = axes[row, col]
            ax.imshow(images[col])
            ax.imshow(cams[col], cmap="jet", alpha=0.5, vmin=0, vmax=255)
    for row in range(rows):
        for col in range(k):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel("ground truth" if row == 0 else chosen[row - 1][0], fontsize=9, rotation=0,
                                ha="right", va="center")
    fig.suptitle(f"{dataset}: CAMs of each method on the same test images", fontsize=10)
    _save(fig, path)
    return path


def _mean_curves(cells: list[tuple[dict, Path]]) -> dict[str, dict[str, np.ndarray]]:
    """Curves of one method averaged over its seeds (same x grid)."""
    per_seed = [c for c in (curves_of(_load_or_warn(npz)) for _, npz in cells) if c]
    out: dict = {}
    for kind in per_seed[0] if per_seed else {}:
        names = per_seed[0][kind]
        out[kind] = {n: np.mean([c[kind][n] for c in per_seed if kind in c and n in c[kind]
                                 and c[kind][n].shape == names[n].shape], axis=0) for n in names}
    return out


def curve_figures(dataset: str, methods: list[str], cells: dict, folder: Path) -> list[tuple[str, Path]]:
    """(caption, png) per kind of curve found for this dataset."""
    plt = _plt()
    curves = {m: _mean_curves(cells[m]) for m in methods if cells.get(m)}
    kinds = sorted({k for c in curves.values() for k in c})
    figures = []
    for kind in kinds:
        have = {m: c[kind] for m, c in curves.items() if kind in c}
        if kind == "mask":
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            for m, c in have.items():
                ax.plot(c["recall"], c["precision"], label=m, lw=1.2)
            ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
                   title=f"{dataset}: pixel precision-recall (PxAP = area)")
            caption = "Pixel precision-recall curves per method (mean over seeds)."
        else:
            x_key = next((k for k in ("taus", "thresholds") if all(k in c for c in have.values())), None)
            if x_key is None:
                continue
            series = [n for n in next(iter(have.values())) if n != x_key]
            if kind == "box":
                series = [n for n in series if n.startswith("MaxBoxAccV2@")] or series
            fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6), squeeze=False)
            for ax, name in zip(axes[0], series):
                for m, c in have.items():
                    if name in c:
                        ax.plot(c[x_key], c[name], label=m, lw=1.2)
                ax.set(xlabel="CAM threshold", ylabel=f"{name} (%)", title=name, ylim=(0, 100))
            ax = axes[0, 0]
            caption = (f"Box accuracy against the CAM threshold per method (all contours, IoU thresholds "
                       f"{', '.join(n.split('@')[1] for n in series)} %; mean over seeds)."
                       if kind == "box" else f"{kind} curves against the threshold (mean over seeds).")
        ax.legend(fontsize=7, ncol=2)
        png = folder / f"{_slug(dataset)}-{_slug(kind)}-curves.png"
        _save(fig, png)
        figures.append((caption, png))
    return figures


def markdown_to_html(text: str) -> str:
    """The subset of Markdown `bench profile --write` produces: headings, pipe tables, bullet
    lists and paragraphs."""
    out, lines, i = [], text.splitlines(), 0
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip().startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            head = cells(line)
            i += 2
            body = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                body.append(cells(lines[i]))
                i += 1
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
                       + "</table>")
            continue
        elif line.strip().startswith("- "):
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(f"<li>{html.escape(lines[i].strip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
        i += 1
    return "\n".join(out)


def _table(dataset: str, rows: list[dict], reported: list) -> str:
    primary = rows[0]["primary_metric"]
    metrics = [primary] + [m for m in SHOWN if m != primary and any(m in r for r in rows)]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "method", *metrics, "seeds", "budget"])
    body = []
    for rank, row in enumerate(rows, start=1):
        label = row["method"] + (f" (off-protocol: {'; '.join(row['off_protocol'])})" if row.get("off_protocol") else "")
        body.append(f"<tr><td>{rank}</td><td class='name'>{html.escape(label)}</td>"
                    + "".join(f"<td>{fmt_mean_std(row.get(m))}</td>" for m in metrics)
                    + f"<td>{len(row['seeds'])}</td><td>{html.escape(row['budget'])}</td></tr>")
    for r in reported:
        cols = "".join(f"<td>{r.value:.1f}</td>" if m == r.metric else "<td></td>" for m in metrics)
        body.append(f"<tr class='reported'><td>-</td><td class='name'>{html.escape(r.method)} (reported, "
                    f"{html.escape(r.backbone)}; {html.escape(r.paper)})</td>{cols}<td></td><td>paper</td></tr>")
    return f"<table id='table-{_slug(dataset)}'><tr>{head}</tr>{''.join(body)}</table>"


def _reported_only(dataset: str, reported: list) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("method", "metric", "backbone", "reported", "paper"))
    body = "".join(f"<tr class='reported'><td class='name'>{html.escape(r.method)} (reported)</td><td>{html.escape(r.metric)}"
                   f"</td><td>{html.escape(r.backbone)}</td><td>{r.value:.1f}</td><td class='name'>{html.escape(r.paper)}</td></tr>"
                   for r in sorted(reported, key=lambda r: (r.metric, r.method, r.backbone)))
    return f"<table id='reported-{_slug(dataset)}'><tr>{head}</tr>{body}</table>"


def write_report(results_dir: Path, out_dir: Path, kernels: Path | None = None, reported: Path | None = REPORTED_CSV,
                 screenshot: Path | None = None) -> Path:
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    entry_files(results_dir)  # a mistyped folder is an error (before the lock would create it)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    with results_lock(results_dir):  # a consistent snapshot of the entries and their artifacts
        records = load_results(results_dir)
        tables = summarize(records)
        cells = _artifacts(records)
        published = load_reported(reported) if reported is not None and Path(reported).is_file() else []
        parts = [f"<h1>wsolbench report</h1><p class='note'>Generated by <code>python -m bench report</code> on "
                 f"{_dt.date.today().isoformat()} from <code>{html.escape(str(results_dir))}</code>: "
                 f"{sum(r.get('status') == 'ok' for r in records)} finished entries. Reported rows (grey, italic) are "
                 f"published numbers from <code>leaderboard/reported.csv</code>, not reproduced here.</p>"]
        nav = ["<a href='#leaderboard'>leaderboard</a>"] + [f"<a href='#{_slug(d)}'>{html.escape(d)}</a>" for d in tables]
        parts.append("<h2 id='leaderboard'>Leaderboard</h2>")
        for dataset, rows in tables.items():
            parts.append(f"<h3>{html.escape(dataset)}</h3><p>Ranked by {html.escape(rows[0]['primary_metric'])} (%), "
                         f"mean ± sample std over seeds; budget and backbone of each run in results.csv.</p>")
            parts.append(_table(dataset, rows, [r for r in published if r.dataset == dataset]))
        elsewhere = sorted({r.dataset for r in published} - set(tables))
        if elsewhere:
            parts.append("<h3>Reported in papers (datasets without results here)</h3>")
            for dataset in elsewhere:
                parts.append(f"<h4>{html.escape(dataset)}</h4>" + _reported_only(dataset, [r for r in published
                                                                                          if r.dataset == dataset]))
        for dataset, rows in tables.items():
            methods = [row["method"] for row in rows]
            parts.append(f"<h2 id='{_slug(dataset)}'>{html.escape(dataset)}</h2>")
            grid = sample_grid(dataset, methods, cells.get(dataset, {}), results_dir,
                               figures / f"{_slug(dataset)}-samples.png")
            if grid:
                parts.append(f"<p>The same test images for every method: ground truth (green) on the first row, then "
                             f"each method's normalised CAM (jet, 50% opacity).</p><img class='samples' "
                             f"src='figures/{grid.name}' alt='{html.escape(dataset)} CAM samples'>")
            for caption, png in curve_figures(dataset, methods, cells.get(dataset, {}), figures):
                parts.append(f"<p>{html.escape(caption)}</p><img class='curves' src='figures/{png.name}' "
                             f"alt='{html.escape(caption)}'>")
            without = [m for m in methods if not cells.get(dataset, {}).get(m)]
            if without:
                parts.append(f"<p class='note'>No artifacts (entries written before the runner stored CAMs and curves; "
                             f"rerun them to draw them): {html.escape(', '.join(without))}.</p>")
        failed = [r for r in records if r.get("status") != "ok"]
        if failed:
            parts.append("<h2 id='failed'>Failed cells</h2><ul>" + "".join(
                f"<li>{html.escape(r['dataset'])}/{html.escape(r['method'])}/seed{r['seed']}: "
                f"{html.escape(str(r.get('error')))}</li>" for r in failed) + "</ul>")
    if kernels is not None and Path(kernels).is_file():
        nav.append("<a href='#kernels'>kernels</a>")
        parts.append("<h2 id='kernels'>Kernel speed tables</h2>" + markdown_to_html(Path(kernels).read_text()))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>wsolbench report</title>"
            f"<style>{CSS}</style></head><body><nav>{''.join(nav)}</nav>\n" + "\n".join(parts) + "\n</body></html>\n")
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    if screenshot is not None:
        from bench.browser import screenshot as take

        take(index, screenshot)
    return index
