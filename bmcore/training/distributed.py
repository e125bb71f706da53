"""Multi-process data-parallel training (DDP): launching through ``torchrun`` and the per-rank facts.

``bmseg train --gpus N`` re-executes itself under ``python -m torch.distributed.run --standalone
--nproc-per-node N``; each of the N processes finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its
environment (as with any ``torchrun`` launch, so ``torchrun --nproc-per-node N -m bmcore.cli train ...``
works as well), joins the process group (NCCL on GPUs, gloo on CPUs) and trains on its own share of the
sampled slices. Rank 0 alone writes checkpoints, the split and the MLflow run.

With ``--device cpu`` the same path runs N CPU processes over gloo: that is how the tests exercise it
on machines without GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from bmcore.training.progress import start_fresh_line


@dataclass(frozen=True)
class Rank:
    """Where this process stands in the job: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Rank:
    """This process's rank, from the variables ``torchrun`` sets (a single process without them, or
    with ``WORLD_SIZE`` 1: a stray ``RANK`` alone changes nothing)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return Rank()
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {exc}") from None
    return Rank(rank, local_rank, world_size)


def rank_device(name: str, rank: Rank) -> torch.device:
    """The device a rank trains on: its own GPU (``cuda:LOCAL_RANK``) or the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and rank.distributed:
        return torch.device("cuda", rank.local_rank)
    return device


def check_gpus(gpus: int, device: str) -> None:
    """Refuse a ``--gpus`` request this machine cannot meet, with one line that says why."""
    if gpus < 1:
        raise ValueError(f"--gpus must be 1 or more, got {gpus}")
    if device == "cpu" or gpus == 1:
        return
    if device not in ("auto", "cuda"):
        raise ValueError(f"--gpus {gpus} runs one process per GPU: use --device cuda or auto, not {device}")
    available = torch.cuda.device_count()
    if available < gpus:
        raise ValueError(
            f"--gpus {gpus} asks for {gpus} GPUs but this machine has {available}"
            + ("" if available else "; --device cpu runs the processes on the CPU (gloo)")
        )


def torchrun_args(gpus: int, argv: Sequence[str], log_dir: str) -> list[str]:
    """``torchrun`` arguments that run ``bmseg <argv>`` in ``gpus`` processes on this node."""
    launch = ["--standalone", f"--nproc-per-node={gpus}", f"--log-dir={log_dir}"]
    return [*launch, "--module", "bmcore.cli", *argv]


def launch(gpus: int, argv: Sequence[str]) -> str | None:
    """Run ``bmseg <argv>`` under ``torchrun`` in ``gpus`` processes (the arguments as given on the
    command line); returns None, or how the first failed process ended (each process that could has
    already said why, as one ``error:`` line). Ctrl-C or SIGTERM to the launcher stops the processes
    and raises ``KeyboardInterrupt``.

    Each process gets an equal share of this process's cores (``OMP_NUM_THREADS``) unless one is set.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // gpus)))
    for name in list(logging.root.manager.loggerDict):  # each sets its own level; we say it in one line
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with tempfile.TemporaryDirectory(prefix="bmseg-torchrun-") as log_dir:  # else one is left in /tmp
            run(get_args_parser().parse_args(torchrun_args(gpus, argv, log_dir)))
    except SignalException as exc:
        start_fresh_line()  # rank 0, stopped by the signal, may have left its bar's line open
        raise KeyboardInterrupt from exc
    except ChildFailedError as exc:
        start_fresh_line()  # a rank killed outright leaves its progress bar's line open
        rank, first = exc.get_first_failure()
        if first.exitcode is not None and first.exitcode < 0:
            return f"process {rank} was killed by {first.signal_name()}"
        return f"process {rank} exited with code {first.exitcode}"
    return None


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[Rank, torch.device]]:
    """Join the job's process group for the block (no-op for a single process); yields rank and device.

    Leaves with a barrier, so no rank tears the group down while another still needs it.
    """
    rank = current()
    device_ = rank_device(device, rank)
    if not rank.distributed:
        yield rank, device_
        return
    if device_.type == "cuda":
        torch.cuda.set_device(device_)
    backend = "nccl" if device_.type == "cuda" else "gloo"
    device_id = device_ if backend == "nccl" else None
    dist.init_process_group(backend, timeout=timedelta(minutes=30), device_id=device_id)
    try:
        yield rank, device_
        barrier()
    except BaseException:
        if not rank.is_main:  # this rank's error line may follow rank 0's bar, left open as rank 0 died
            start_fresh_line()
        raise
    finally:
        dist.destroy_process_group()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_active():
        dist.barrier()


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks (itself when not distributed); float64 on the host."""
    values = values.detach().to(torch.float64)
    if not is_active():
        return values.cpu()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    values = values.to(device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def share_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP copies them from rank 0 before each training forward, so after the epoch's last batch every
    rank holds its own; call this after a training pass so validation and the saved model agree.
    """
    if not is_active():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def raise_if_any_failed(error: Exception | None) -> None:
    """Collective: when any rank failed (``error``), every rank raises, naming the first failure.

    Used where the ranks work apart before meeting again, so that no rank waits in a collective for
    one that has already given up.
    """
    if not is_active():
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else str(error) or type(error).__name__)
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"process {rank} failed: {message}")


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a stop request must stop all of them together)."""
    if not is_active():
        return flag
    return bool(sum_across_ranks(torch.tensor([float(flag)]))[0] > 0)
