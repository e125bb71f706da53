"""Benchmark: what one study upload costs the web process (peak RSS, wall and CPU time), for an upload bomb
and for legitimate uploads at the web's voxel cap.

Run: ``.venv/bin/python bench/bench_upload.py`` → ``bench/results/upload.json`` (about a minute);
``--baseline-tree DIR`` runs the same cases against another checkout too (e.g. ``git archive`` of the
commit before the fix, unpacked into DIR) and records its figures under ``baseline``.

Each case starts a fresh ``gunicorn --preload --workers 1`` (sync, as ``bmseg up`` runs it) on a free
port with a fresh SQLite database in a temporary directory, makes a researcher and a bearer token, sends
one warm-up request, then the upload (``POST /api/v1/studies``). The worker's peak resident set comes
from ``VmHWM`` in ``/proc/<worker>/status`` (its high-water mark since it started), read after the
warm-up and after the upload; its CPU seconds from ``/proc/<worker>/stat``.

Cases (``settings.max_upload_voxels`` = 256³ = 16,777,216 voxels per file by default):

* ``bomb_500x500x250``: issue #16 item 8, four ~120 KB gzip files whose headers claim 500×500×250 int16
  (62.5 million voxels, 125 MB each, every voxel present): refused from the header.
* ``amplification_at_cap``: the most a small request can still make the web expand: four ~130 KB gzip
  files of 256³ float64 ones (134 MB each expanded); accepted.
* ``legit_at_cap``: a realistic study at the cap: four 256³ float32 modalities (an ellipsoid "brain" with
  noise, ~60 MB each gzipped) and a uint8 label; accepted.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
from common import free_port, machine_info, rounded, write_result

REPO = Path(__file__).resolve().parents[1]
MODALITY_FIELDS = ("t1", "t1ce", "t2", "flair")
CAP_SHAPE = (256, 256, 256)
BOMB_SHAPE = (500, 500, 250)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
SETUP = """
import sys
from bmcore.accounts import create_token, create_user
from bmcore.db import init_db, session_scope
init_db()
with session_scope() as session:
    create_user(session, "upload@example.org", "bench-password-123")
    print(create_token(session, "upload@example.org", "bench"))
"""


# ------------------------------------------------------------------------------------------ the files


def _header(shape, dtype) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(AFFINE, code=1)
    header.set_sform(AFFINE, code=1)
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4


def constant_gzip(shape, dtype, value) -> bytes:
    """A gzipped single-file NIfTI of ``shape`` filled with ``value``, compressed as tightly as gzip can."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(_header(shape, dtype))]
    block = np.full(1 << 20, value, dtype=dtype).tobytes()
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    for start in range(0, total, len(block)):
        parts.append(compressor.compress(block[: total - start]))
    return b"".join(parts) + compressor.flush()


def realistic_study(shape=CAP_SHAPE, seed: int = 0) -> dict[str, bytes]:
    """Four float32 modalities (ellipsoid with noise) and a uint8 label, gzipped as scanners' tools do."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    radius = x**2 + y**2 + z**2
    brain = radius < 0.8
    label = np.zeros(shape, np.uint8)
    label[((x - 0.3) ** 2 + (y - 0.2) ** 2 + z**2) < 0.02] = 3
    files = {}
    for index, field in enumerate(MODALITY_FIELDS):
        volume = np.where(brain, np.float32(100 + 10 * index), np.float32(0))
        volume += rng.normal(0, 3, shape).astype(np.float32) * brain
        image = nib.Nifti1Image(volume.astype(np.float32), AFFINE)
        files[field] = gzip.compress(image.to_bytes(), compresslevel=1)
        del volume, image
    files["seg"] = gzip.compress(nib.Nifti1Image(label, AFFINE).to_bytes(), compresslevel=6)
    return files


def build_cases(names: list[str]) -> dict[str, dict[str, bytes]]:
    builders = {
        "bomb_500x500x250": lambda: dict.fromkeys(MODALITY_FIELDS, constant_gzip(BOMB_SHAPE, np.int16, 1)),
        "amplification_at_cap": lambda: dict.fromkeys(
            MODALITY_FIELDS, constant_gzip(CAP_SHAPE, np.float64, 1.0)
        ),
        "legit_at_cap": realistic_study,
    }
    return {name: builders[name]() for name in names}


# ------------------------------------------------------------------------------------------ the server


def _worker_pid(master: int) -> int:
    """The one gunicorn worker: the process whose parent is the master."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                if f"\nPPid:\t{master}\n" in status:
                    return int(entry.name)
        time.sleep(0.1)
    raise RuntimeError("no gunicorn worker found")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Web:
    """A fresh gunicorn (one sync worker) serving ``tree`` from a temporary data dir, with a user token."""

    def __init__(self, tree: Path, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BMSEG_")}
        self.env |= {"BMSEG_DATA_DIR": str(root / "data"), "BMSEG_ENV": "test", "PYTHONPATH": str(tree)}
        self.env |= {"BMSEG_REDIS_URL": "redis://127.0.0.1:1/0"}  # unused by uploads
        setup = subprocess.run(
            [sys.executable, "-c", SETUP], cwd=tree, env=self.env, capture_output=True, text=True, check=True
        )
        self.token = setup.stdout.strip().splitlines()[-1]
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = (root / "gunicorn.log").open("w")
        command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "1", "--timeout", "300"]
        self.server = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", "services.web:create_app()"],
            cwd=tree,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.worker = _worker_pid(self.server.pid)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/api/v1/me", headers=self.headers, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.server.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"gunicorn did not start:\n{(self.root / 'gunicorn.log').read_text()[-3000:]}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def close(self) -> None:
        self.server.terminate()
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.log.close()


def measure(tree: Path, name: str, files: dict[str, bytes]) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"bmseg-bench-upload-{name}-"))
    web = Web(tree, root)
    try:
        before_rss, before_cpu = _peak_rss_mb(web.worker), _cpu_seconds(web.worker)
        parts = {field: (f"{field}.nii.gz", content, "application/gzip") for field, content in files.items()}
        started = time.perf_counter()
        response = requests.post(
            f"{web.base}/api/v1/studies",
            files=parts,
            data={"patient_id": "BENCH1", "study_uid": f"BENCH-{name}"},
            headers=web.headers,
            timeout=600,
        )
        wall = time.perf_counter() - started
        peak, cpu = _peak_rss_mb(web.worker), _cpu_seconds(web.worker) - before_cpu
        body = response.json()
        stored = root / "data" / "uploads" / f"BENCH-{name}"
        return {
            "request_mb": sum(len(content) for content in files.values()) / 2**20,
            "status": response.status_code,
            "message": body.get("error") or f"stored, shape {body.get('shape')}",
            "wall_s": wall,
            "worker_cpu_s": cpu,
            "worker_peak_rss_mb": peak,
            "worker_rss_after_warmup_mb": before_rss,
            "worker_peak_rss_increase_mb": peak - before_rss,
            "stored_mb": sum(p.stat().st_size for p in stored.iterdir()) / 2**20 if stored.is_dir() else 0.0,
        }
    finally:
        web.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = ["bomb_500x500x250", "amplification_at_cap", "legit_at_cap"]
    parser.add_argument("--cases", nargs="*", choices=choices, default=choices)
    parser.add_argument("--baseline-tree", type=Path, default=None, help="another checkout to measure too")
    args = parser.parse_args()

    machine = machine_info()
    cases = build_cases(args.cases)
    trees = {"current": REPO} | ({"baseline": args.baseline_tree.resolve()} if args.baseline_tree else {})
    figures = {
        label: {name: measure(tree, name, files) for name, files in cases.items()}
        for label, tree in trees.items()
    }
    result = {
        "what": "one POST /api/v1/studies: peak RSS, wall and CPU time of a fresh web worker per case",
        "command": "python bench/bench_upload.py" + (" --baseline-tree DIR" if args.baseline_tree else ""),
        "server": "gunicorn --preload --workers 1 (sync), SQLite",
        "max_upload_voxels": int(np.prod(CAP_SHAPE)),
        **figures,
        "machine": machine,
    }
    path = write_result("upload", rounded(result, 3))
    print(path.read_text())


if __name__ == "__main__":
    main()
