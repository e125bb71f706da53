"""Run under torchrun by tests/bmcore/training/test_distributed.py: train two epochs, write what a rank saw.

Usage: torchrun --standalone --nproc-per-node N ddp_probe.py COHORT OUT_DIR
Each rank writes OUT_DIR/rank<R>.json: a hash of its final weights, its history, one draw of its
sampler (before training) and its share of the validation slices.
"""

import hashlib
import json
import sys
from pathlib import Path

import torch

from bmcore.data.dataset import SliceDataset
from bmcore.experiments.training import prepare_data
from bmcore.models import bare_model
from bmcore.training import distributed
from bmcore.training.config import TrainConfig
from bmcore.training.loop import fit
from bmcore.training.parts import build_training_parts

cohort, out = Path(sys.argv[1]), Path(sys.argv[2])
config = TrainConfig(
    epochs=2,
    batch_size=4,
    size=64,
    base_channels=4,
    depth=2,
    samples_per_epoch=30,
    num_workers=0,
    device="cpu",
    augment=True,
)
with distributed.process_group("cpu") as (rank, _device):
    prepared = prepare_data(cohort, config, cache_dir=out / f"cache{rank.rank}")
    parts = build_training_parts(config, prepared.train_cases, prepared.val_cases)
    drawn = list(iter(parts.train_loader.sampler))
    result = fit(parts, config, out / "run", progress=False, should_stop=lambda: False)  # polled together
    weights = hashlib.sha256()
    for key, value in sorted(bare_model(parts.model).state_dict().items()):
        weights.update(key.encode() + value.detach().cpu().numpy().tobytes())
    record = {
        "rank": rank.rank,
        "world_size": rank.world_size,
        "ddp": isinstance(parts.model, torch.nn.parallel.DistributedDataParallel),
        "weights": weights.hexdigest(),
        "history": [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in result.history],
        "drawn": drawn,
        "val_slices": len(parts.val_loader.dataset),
        "val_total": len(SliceDataset(prepared.val_cases)),
    }
    (out / f"rank{rank.rank}.json").write_text(json.dumps(record))
