"""Figures as PNG files: training curves (the study's figures 9–11) and segmentation overlays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

CURVES = (
    ("loss", "loss"),
    ("paper_accuracy", "accuracy (paper-style)"),
    ("paper_mean_dice", "mean Dice (paper-style)"),
    ("paper_mean_iou", "mean IoU (paper-style)"),
)
# transparent background, NETC yellow, SNFH green, ET red
LABEL_COLOURS = ListedColormap(
    [(0, 0, 0, 0), (1.0, 0.85, 0.1, 0.8), (0.2, 0.8, 0.3, 0.55), (0.95, 0.15, 0.15, 0.85)]
)


def plot_curves(histories: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Loss, accuracy, Dice and IoU against epoch; one colour per model, train solid, validation dashed."""
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for (key, label), axis in zip(CURVES, axes, strict=True):
        for index, (name, history) in enumerate(histories.items()):
            colour = f"C{index}"
            epochs = [h["epoch"] for h in history]
            for side, style in (("train", "-"), ("val", "--")):
                values = [h.get(f"{side}_{key}") for h in history]
                if any(v is not None for v in values):
                    axis.plot(
                        epochs,
                        [np.nan if v is None else v for v in values],
                        style,
                        color=colour,
                        label=f"{name} {side}",
                    )
        axis.set_title(label)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_overlays(rows: list[dict], path: str | Path) -> Path:
    """Each row: ``{"title", "image" (X,Y), "masks": {name: (X,Y) labels}}`` → a grid of overlays."""
    columns = 1 + max(len(r["masks"]) for r in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 3 * len(rows)), squeeze=False)
    for row, line in zip(axes, rows, strict=True):
        image = line["image"].T
        row[0].imshow(image, cmap="gray", origin="lower")
        row[0].set_title(line["title"], fontsize=8)
        for axis, (name, mask) in zip(row[1:], line["masks"].items(), strict=False):
            axis.imshow(image, cmap="gray", origin="lower")
            axis.imshow(mask.T, cmap=LABEL_COLOURS, vmin=0, vmax=3, origin="lower", interpolation="nearest")
            axis.set_title(name, fontsize=8)
        for axis in row:
            axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
