"""Why the width-8 U-Net loses edema: per-epoch class separation of U-Nets of two widths, side by side.

    python bench/bench_width.py [--widths 8 16] [--epochs 7]

Trains the U-Net with the study's recipe (Adam 1e-3, cross-entropy, no augmentation) on a small
synthetic cohort (14 studies, 160 × 160 × 80, input 128², 600 slices per epoch), once per width, and
records per epoch: training loss, validation pooled Dice of edema (SNFH) and enhancing tumour (ET), and
— from a copy of the epoch's checkpoint — the mean logits of each class on training-slice background
and edema voxels. The margin column (edema logit minus background logit on edema voxels) shows whether
the network has learnt to tell edema from background or only wins a tie-break.
Writes ``bench/results/unet_width.json``. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, rounded, write_result  # noqa: E402


def class_logits(checkpoint: Path, images, labels) -> dict:
    import torch

    from bmcore.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)  # eval mode
    with torch.inference_mode():
        logits = model(images)
    means = {}
    for label, name in ((0, "background"), (2, "edema")):
        voxels = labels == label
        means[name] = [float(logits[:, k][voxels].mean()) for k in range(logits.shape[1])]
    return means | {"edema_margin": means["edema"][2] - means["edema"][0]}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--epochs", type=int, default=7)
    args = parser.parse_args()

    import numpy as np
    import torch

    from bmcore.data.dataset import SliceDataset
    from bmcore.data.synth import synth_cohort
    from bmcore.experiments.request import TrainRequest
    from bmcore.experiments.training import prepare_data, train_run
    from bmcore.models import load_checkpoint
    from bmcore.training.config import TrainConfig

    machine = machine_info()
    widths = {}
    with tempfile.TemporaryDirectory(prefix="bench-width-") as temp:
        cohort, cache = Path(temp) / "cohort", Path(temp) / "cache"
        synth_cohort(cohort, 14, 3, "brats", shape=(160, 160, 80), spacing=(1.5, 1.5, 2.0))
        for width in args.widths:
            config = TrainConfig(
                arch="unet", loss="ce", size=128, base_channels=width, epochs=args.epochs,
                samples_per_epoch=600, num_workers=1, augment=False, early_stopping_patience=100,
            )  # fmt: skip
            prepared = prepare_data(cohort, config, cache_dir=cache)
            probe = SliceDataset(prepared.train_cases)
            picked = np.flatnonzero(probe.lesion_items)[::7][:48]
            images = torch.stack([probe[i][0] for i in picked])
            labels = torch.stack([probe[i][1] for i in picked])
            out = Path(temp) / f"w{width}"
            kept: list[Path] = []

            def keep(epoch: int, _figures: dict, out: Path = out, kept: list = kept) -> None:
                kept.append(Path(shutil.copy(out / "last.pt", out / f"e{epoch}.pt")))

            started = time.perf_counter()
            train_run(
                TrainRequest(cohort, config, out, show_progress=False, prepared=prepared, callbacks=(keep,))
            )
            seconds = time.perf_counter() - started
            epochs = []
            for path in kept:
                _, checkpoint = load_checkpoint(path)
                figures = checkpoint["extra"]["history"][-1]
                epochs.append(
                    {
                        "epoch": figures["epoch"],
                        "train_loss": figures["train_loss"],
                        "val_pooled_dice_SNFH": figures.get("val_pooled_dice_SNFH"),
                        "val_pooled_dice_ET": figures.get("val_pooled_dice_ET"),
                        "logits": class_logits(path, images, labels),
                    }
                )
            widths[str(width)] = {"seconds": seconds, "epochs": epochs}
            last = epochs[-1]
            print(
                f"width {width}: edema Dice {last['val_pooled_dice_SNFH']:.2f}, "
                f"edema margin {last['logits']['edema_margin']:+.2f} after {len(epochs)} epochs",
                flush=True,
            )
    result = {
        "benchmark": "unet_width",
        "recipe": "Adam 1e-3, cross-entropy, 128², 600 slices/epoch, no augmentation, 14 synthetic studies",
        "machine": machine,
        "widths": widths,
    }
    print("->", write_result("unet_width", rounded(result, 3)))


if __name__ == "__main__":
    main()
