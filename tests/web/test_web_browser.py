"""End to end in a real browser: headless Chromium drives the dashboard served by werkzeug, a real Celery
worker (solo pool) runs the segmentation from Redis, and the viewer shows its overlay and lesion table.

Needs /usr/bin/chromium (``apt-get install chromium``) and Redis; skipped with the reason otherwise.
Screenshots go to tests/web/screenshots/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_REDIS_URL = os.environ.get("BMSEG_TEST_BROWSER_REDIS_URL", "redis://127.0.0.1:6379/12")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).with_name("screenshots")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JOB_TIMEOUT_MS = 240_000
FIELD_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
NATURAL_SIZE = ("naturalWidth", "naturalHeight")


@pytest.fixture
def browser_redis():
    import redis

    client = redis.Redis.from_url(BROWSER_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis unreachable at {BROWSER_REDIS_URL} ({exc})")
    client.flushdb()
    yield BROWSER_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def stack(tmp_path, monkeypatch, browser_redis):
    """Settings in tmp_path, the web app on a free port (thread), and one real worker (subprocess)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    from werkzeug.serving import make_server

    from bmcore.accounts import create_user
    from bmcore.config import get_settings
    from bmcore.db import dispose_engines, session_scope
    from services.web import create_app

    env = {
        "BMSEG_DATA_DIR": str(tmp_path / "data"),
        "BMSEG_REDIS_URL": browser_redis,
        "BMSEG_ENV": "test",
    }
    for name in ("BMSEG_DATABASE_URL", "BMSEG_MLFLOW_TRACKING_URI", "BMSEG_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()

    app = create_app()
    with session_scope() as session:
        # an admin: the test segments with a checkpoint file, a raw path only admins may queue
        create_user(session, "viewer@example.org", "browser-password", is_admin=True)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    worker_log = (tmp_path / "worker.log").open("w")
    worker_env = dict(
        os.environ, **env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        """Start the worker (once): a test queues work first, so its pages can watch the job change."""
        if not workers:
            workers.append(popen_worker(worker_env, worker_log))
        return workers[0]

    try:
        yield {
            "url": f"http://127.0.0.1:{server.server_port}",
            "tmp": tmp_path,
            "worker_log": tmp_path / "worker.log",
            "start_worker": start_worker,
        }
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        worker_log.close()
        server.shutdown()
        thread.join(timeout=10)
        get_settings.cache_clear()
        dispose_engines()


def popen_worker(env: dict[str, str], log) -> subprocess.Popen:
    """One real Celery worker, solo pool, both queues, as ``bmseg worker`` starts it."""
    command = [sys.executable, "-m", "celery", "-A", "services.worker.app", "worker", "-P", "solo", "-c", "1"]
    command += ["-Q", "gpu,cpu", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def tiny_checkpoint(path: Path) -> Path:
    """A 2-level U-Net with 4 base channels whose head says 'enhancing tumour' everywhere: inside the brain
    mask every voxel becomes ET, so the viewer has a red overlay and the lesion table a row."""
    import torch

    from bmcore.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("unet", base_channels=4, depth=2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 6.0]))
    extra = {"preprocess": {"size": 64, "modalities": ["t1", "t1ce", "t2", "flair"]}}
    save_checkpoint(path, model, "unet", extra=extra)
    return path


def synthetic_study(folder: Path) -> dict[str, Path]:
    from bmcore.data.synth import synth_cohort

    synth_cohort(folder, 1, 7, "brats", shape=(64, 64, 40), spacing=(3.5, 3.5, 4.0), workers=1)
    study = next(p for p in sorted(folder.iterdir()) if p.is_dir())
    return {field: study / f"{study.name}-{suffix}.nii.gz" for field, suffix in FIELD_SUFFIX.items()} | {
        "seg": study / f"{study.name}-seg.nii.gz"
    }


def test_upload_segment_and_view_in_a_browser(stack):
    from playwright.sync_api import expect, sync_playwright

    checkpoint = tiny_checkpoint(stack["tmp"] / "models" / "tiny-unet.pt")
    files = synthetic_study(stack["tmp"] / "cohort")
    SCREENSHOTS.mkdir(exist_ok=True)
    base = stack["url"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Sign in.
            page.goto(f"{base}/jobs")
            expect(page).to_have_url(re.compile(r"/sign-in\?next=/jobs$"))
            page.fill("#email", "viewer@example.org")
            page.fill("#password", "browser-password")
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/jobs")

            # Upload the study through the form.
            page.goto(f"{base}/studies")
            page.fill("#patient_id", "BRW001")
            page.fill("#study_uid", "BRW001A")
            for field, path in files.items():
                page.set_input_files(f"#file-{field}", str(path))
            page.click("#upload-button")
            expect(page).to_have_url(re.compile(r"/studies/\d+$"))
            expect(page.locator(".alert-success")).to_contain_text("BRW001A stored")
            study_id = page.url.rsplit("/", 1)[1]

            # Queue a segmentation from the new-job form.
            page.goto(f"{base}/jobs/new")
            page.select_option("#type", "segment")
            page.select_option("#study_id", study_id)
            page.fill("#model", str(checkpoint))
            page.click("#submit-job")
            expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
            job_id = page.url.rsplit("/", 1)[1]
            status = page.locator("#job-status")
            expect(status).to_have_text("queued")  # no worker yet

            # The jobs list in a second tab; then start the worker and watch both pages catch up live.
            jobs_page = context.new_page()
            jobs_page.goto(f"{base}/jobs")
            row_badge = jobs_page.locator(f'tr[data-job-id="{job_id}"] .badge')
            expect(row_badge).to_have_text("queued")
            for watched in (page, jobs_page):
                watched.evaluate("window.__sameDocument = true")
            worker = stack["start_worker"]()
            expect(status).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
            expect(row_badge).to_have_text("succeeded", timeout=30_000)
            for watched in (page, jobs_page):
                assert watched.evaluate("window.__sameDocument") is True, f"{watched.url} reloaded"
            expect(page.locator("#job-pct")).to_have_text("100 %")
            expect(page.locator("#artifacts")).to_contain_text("BRW001A_seg")
            # The result card is swapped in once the job ends: the lesion table first, every figure collapsed.
            expect(page.locator("#segmented-1 tbody tr")).not_to_have_count(0)
            expect(page.locator("#metrics-table")).to_be_hidden()
            page.click("#all-metrics > summary")
            expect(page.locator("#metrics-table")).to_contain_text("lesion_count")
            assert page.evaluate("window.__sameDocument") is True, "the result appeared only after a reload"
            expect(page.locator("#cancel-form")).to_be_hidden()
            page.screenshot(path=str(SCREENSHOTS / "job.png"), full_page=True)
            jobs_page.screenshot(path=str(SCREENSHOTS / "jobs.png"), full_page=True)
            jobs_page.close()

            # The viewer: overlay image and lesion table.
            page.click("#viewer-link")
            expect(page).to_have_url(f"{base}/studies/{study_id}")
            image = page.locator("#slice-img")
            expect(image).to_have_attribute("src", re.compile(r"overlay=prediction"))
            # (data-loaded is set by the page's script on each image load; no wait_for_function: its
            # polling evaluates strings, which the dashboard's CSP forbids.)
            expect(image).to_have_attribute("data-loaded", re.compile(r"overlay=prediction"))
            assert page.evaluate("document.getElementById('slice-img').naturalWidth") > 0
            expect(page.locator("#lesion-table tbody tr")).not_to_have_count(0)
            expect(page.locator("#mask-download")).to_be_visible()

            # Move the slider and switch modality: the image follows without a reload.
            before = image.get_attribute("src")
            page.locator("#slice").fill("5")
            page.click('#modality button[data-value="flair"]')
            expect(image).to_have_attribute("src", re.compile(r"modality=flair&plane=axial&index=5"))
            assert image.get_attribute("src") != before
            expect(image).to_have_attribute("data-loaded", re.compile(r"modality=flair&plane=axial&index=5"))
            page.locator("#lesion-table tbody tr").first.click()
            page.screenshot(path=str(SCREENSHOTS / "viewer.png"), full_page=True)

            # Switch planes: the slider's range, the orientation letters and the image's shape follow.
            for plane, count, top, left in (
                ("coronal", 64, "S", "R"),
                ("sagittal", 64, "S", "A"),
                ("axial", 40, "A", "R"),
            ):
                page.click(f'#plane button[data-value="{plane}"]')
                expect(image).to_have_attribute("data-loaded", re.compile(rf"plane={plane}&index=\d+"))
                expect(page.locator("#slice")).to_have_attribute("max", str(count - 1))
                expect(page.locator("#orient-top")).to_have_text(top)
                expect(page.locator("#orient-left")).to_have_text(left)
                size = [page.evaluate(f"document.getElementById('slice-img').{n}") for n in NATURAL_SIZE]
                # 64 x 64 x 40 voxels of 3.5 x 3.5 x 4 mm: 224 mm across, 160 mm from top to bottom
                assert size == ([512, 512] if plane == "axial" else [512, round(160 * 512 / 224)]), plane
                if plane == "coronal":
                    page.locator("#slice").fill("30")
                    expect(image).to_have_attribute("data-loaded", re.compile(r"plane=coronal&index=30"))
                    page.screenshot(path=str(SCREENSHOTS / "viewer-coronal.png"), full_page=True)
            # Each plane kept its own slice: axial is still on the lesion clicked above.
            lesion_z = page.locator("#lesion-table tbody tr").first.get_attribute("data-z")
            expect(page.locator("#slice")).to_have_value(lesion_z)

            mask = page.request.get(base + page.locator("#mask-download").get_attribute("href"))
            assert mask.status == 200 and mask.body()[:2] == b"\x1f\x8b"

            assert page_errors == []
        finally:
            browser.close()

    assert worker.poll() is None, stack["worker_log"].read_text()[-3000:]


def test_worker_log_names_the_task(stack):
    """The worker started by the fixture really consumes the queues (guards the fixture itself)."""
    worker = stack["start_worker"]()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = stack["worker_log"].read_text()
        if "ready" in log:
            break
        assert worker.poll() is None, log[-3000:]
        time.sleep(0.5)
    log = stack["worker_log"].read_text()
    assert "bmseg.segment" in log and "ready" in log


def test_a_sweep_page_shows_its_children_as_they_come(stack):
    """The parent's page lists its children live (no reload); when the sweep ends, it shows the ranking."""
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy import select

    from bmcore.data.synth import synth_cohort
    from bmcore.db import User, session_scope
    from bmcore.jobs.lifecycle import submit_job

    cohort = stack["tmp"] / "sweep-cohort"
    synth_cohort(cohort, 4, 3, "brats", shape=(64, 64, 24), spacing=(3.5, 3.5, 6.0), workers=1)
    tiny = {"size": 64, "base_channels": 4, "depth": 2, "batch_size": 8, "num_workers": 0}
    tiny |= {"augment": False, "samples_per_epoch": 16, "epochs": 1}
    with session_scope() as session:
        owner = session.scalars(select(User).where(User.email == "viewer@example.org")).one()
        params = {"data": str(cohort), "grid": {"lr": [1e-3, 3e-4]}, "base": tiny}
        parent_id = submit_job(session, "sweep", params, owner_id=owner.id).id
    base = stack["url"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{base}/jobs/{parent_id}")
            page.fill("#email", "viewer@example.org")
            page.fill("#password", "browser-password")
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/jobs/{parent_id}")
            expect(page.locator("#children-count")).to_have_text("0 train job(s)")
            page.evaluate("window.__sameDocument = true")

            stack["start_worker"]()
            children = page.locator("#children-table tbody tr[data-job-id]")
            expect(children).to_have_count(2, timeout=JOB_TIMEOUT_MS)
            expect(page.locator("#children-count")).to_have_text("2 train job(s)")
            assert page.evaluate("window.__sameDocument") is True, "the children appeared only after a reload"
            expect(children.first.locator("td").nth(1)).to_contain_text("lr=")

            expect(page.locator("#ranking-table")).to_be_visible(timeout=JOB_TIMEOUT_MS)  # drawn at the end
            expect(page.locator("#job-status")).to_have_text("succeeded")
            expect(page.locator("#ranking-table tbody tr")).to_have_count(2)
            page.screenshot(path=str(SCREENSHOTS / "sweep.png"), full_page=True)
            assert page_errors == []
        finally:
            browser.close()
