"""`woof data stats`: class balance, image sizes and colour modes, as markdown and PNG plots."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from woof.breeds import BREEDS, WNIDS
from woof.files import atomic_path, atomic_write_text

from .data import (
    EXPECTED_COUNTS,
    IMAGENET_VAL_PREFIX,
    SPLITS,
    check_layout,
)
from .verify import MAX_LISTED, _flatten, image_files, inspect_images


# ================================================================ stats
def stats(root: Path, workers: int = 1, progress: bool = False) -> dict:
    """Class balance, image sizes (from headers) and colour modes of an Imagewoof folder."""
    check_layout(root)
    files = image_files(root)
    out = {"root": str(root), "counts": {}, "greyscale": {}, "modes": {}, "sizes": {}, "unreadable": [],
           "imagenet_val": sum(p.name.startswith(IMAGENET_VAL_PREFIX) for p in _flatten(files, "val"))}
    for split in SPLITS:
        out["counts"][split] = {w: len(files[split][w]) for w in WNIDS}
        infos = inspect_images(_flatten(files, split), decode=False, workers=workers, progress=progress,
                               desc=f"reading {split}")
        good = [i for i in infos if not i.error]
        out["unreadable"] += [i.path for i in infos if i.error]
        out["greyscale"][split] = sum(i.mode == "L" for i in good)
        out["modes"][split] = dict(Counter(i.mode for i in good).most_common())
        out["sizes"][split] = [(i.width, i.height) for i in good]
    return out


def write_stats(st: dict, out_dir: Path) -> list[Path]:
    """data_stats.md plus PNG plots into out_dir; returns the files written."""

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = _plot_stats(st, out_dir)
    md = out_dir / "data_stats.md"
    atomic_write_text(md, stats_markdown(st, [p.name for p in pngs]))
    return [md, *pngs]


def stats_markdown(st: dict, images: list[str] = ()) -> str:
    counts, splits = st["counts"], list(st["counts"])
    lines = ["# Imagewoof data statistics", "", f"Data: `{st['root']}`", "", "## Class balance", "",
             "| # | breed | wnid | " + " | ".join(splits) + " | total | share of train |",
             "|---|---|---|" + "---:|" * (len(splits) + 2)]
    train_total = sum(counts["train"].values()) or 1
    for i, w in enumerate(WNIDS):
        row = [counts[s][w] for s in splits]
        lines.append(f"| {i} | {BREEDS[w]} | {w} | " + " | ".join(f"{n:,}" for n in row)
                     + f" | {sum(row):,} | {counts['train'][w] / train_total:.1%} |")
    totals = [sum(counts[s].values()) for s in splits]
    lines.append("| | **total** | | " + " | ".join(f"**{n:,}**" for n in totals) + f" | **{sum(totals):,}** | |")
    lines += ["", "Official imagewoof2 split: " + ", ".join(f"{s} {n:,}" for s, n in EXPECTED_COUNTS.items()) + ".",
              f"ImageNet-val-origin val images (`{IMAGENET_VAL_PREFIX}*`): {st['imagenet_val']}.", ""]

    lines += ["## Colour modes", "", "| split | greyscale (L) | all modes |", "|---|---:|---|"]
    for s in splits:
        modes = ", ".join(f"{m}: {n:,}" for m, n in st["modes"][s].items())
        lines.append(f"| {s} | {st['greyscale'][s]:,} | {modes} |")
    lines.append(f"| all | {sum(st['greyscale'].values()):,} | |")
    lines += ["", "Greyscale files are converted to RGB when loaded (`woof.preprocess.load_image`).", ""]

    lines += ["## Image sizes (pixels, from the file headers)", "",
              "| split | measure | min | median | mean | max |", "|---|---|---:|---:|---:|---:|"]
    for s in splits:
        sizes = st["sizes"][s]
        if not sizes:
            continue
        measures = {"width": [w for w, _ in sizes], "height": [h for _, h in sizes],
                    "shorter side": [min(w, h) for w, h in sizes], "longer side": [max(w, h) for w, h in sizes]}
        for name, values in measures.items():
            lines.append(f"| {s} | {name} | {min(values)} | {statistics.median(values):g} | "
                         f"{statistics.fmean(values):.1f} | {max(values)} |")
    every = [wh for s in splits for wh in st["sizes"][s]]
    if every:
        lines += ["", "Most common sizes (width x height):", "", "| size | images |", "|---|---:|"]
        lines += [f"| {w}x{h} | {n:,} |" for (w, h), n in Counter(map(tuple, every)).most_common(10)]
        portrait = sum(h > w for w, h in every)
        lines += ["", f"Landscape {sum(w > h for w, h in every):,}, portrait {portrait:,}, "
                      f"square {sum(w == h for w, h in every):,}."]
    if st["unreadable"]:
        lines += ["", f"**{len(st['unreadable'])} unreadable file(s)** (run `woof data verify`):", ""]
        lines += [f"- `{p}`" for p in st["unreadable"][:MAX_LISTED]]
    if images:
        lines += ["", "## Plots", ""] + [f"![{Path(name).stem}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _plot_stats(st: dict, out_dir: Path) -> list[Path]:
    try:
        from matplotlib.figure import Figure  # object API: no pyplot state, no global backend switch
    except ImportError:
        print("warning: matplotlib is not installed (pip install 'woof[training]'); plots skipped")
        return []
    written = []
    names = [BREEDS[w] for w in WNIDS]
    for split, counts in st["counts"].items():
        fig = Figure(figsize=(8, 4.5), layout="constrained")
        ax = fig.add_subplot()
        values = [counts[w] for w in WNIDS]
        bars = ax.barh(names[::-1], values[::-1], color="tab:blue")
        ax.bar_label(bars, padding=3, fontsize=8)
        ax.set_xlabel("images")
        ax.set_title(f"Imagewoof {split}: images per breed (total {sum(values):,})")
        ax.set_xlim(0, max(values + [1]) * 1.12)
        written.append(_save(fig, out_dir / f"class_balance_{split}.png"))

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    scatter, hist = fig.subplots(1, 2)
    for split, color in zip(st["sizes"], ("tab:blue", "tab:orange")):
        sizes = st["sizes"][split]
        if sizes:
            scatter.scatter([w for w, _ in sizes], [h for _, h in sizes], s=4, alpha=0.3, color=color, label=split)
    scatter.set_xlabel("width (px)")
    scatter.set_ylabel("height (px)")
    scatter.set_title("image sizes")
    scatter.legend(markerscale=3)
    every = [wh for s in st["sizes"] for wh in st["sizes"][s]]
    if every:
        hist.hist([[min(wh) for wh in every], [max(wh) for wh in every]], bins=40,
                  label=["shorter side", "longer side"])
        hist.set_yscale("log")
    hist.set_xlabel("pixels")
    hist.set_ylabel("images (log scale)")
    hist.set_title("shorter and longer side, both splits")
    hist.legend()
    written.append(_save(fig, out_dir / "image_sizes.png"))
    return written


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # render with Agg whatever the session's default backend is
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


