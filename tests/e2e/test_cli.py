"""End to end through the real Hydra CLI: train, resume, evaluate, and user mistakes."""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import TINY, run_cli
from vtcc.build import restore_run
from vtcc.utils.environment import ENVIRONMENT_KEY


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny 2-epoch training run shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli("train", *TINY, "hydra.run.dir=outputs/train/first", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def test_training_writes_config_checkpoints_metrics(trained_run):
    run = trained_run / "outputs/train/first"
    assert (run / "config.yaml").is_file() and (run / ".hydra/overrides.yaml").is_file()
    assert (run / "checkpoints/last.ckpt").is_file()
    # No checkpoint is chosen with the labels unless asked for by name (callbacks=best_by_labels).
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    header = (run / "logs/metrics.csv").read_text().splitlines()[0].split(",")
    for key in (
        "train/loss",
        "train/loss_instance",
        "train/loss_cluster",
        "train/loss_entropy",
        "val/acc",
        "val/nmi",
    ):
        assert key in header
    final = json.loads((run / "final_metrics.json").read_text())
    assert set(final) == {"acc", "acc_many_to_one", "nmi", "ari", "num_clusters", "stopped"}
    stopped = final.pop("stopped")  # why training ended: its 2 epochs were done
    assert (stopped["reason"], stopped["epochs"]) == ("epochs_done", 2.0) and stopped["training_seconds"] > 0
    # The final metrics are the final model's: the last evaluation logged, scored over all 1,797 digits.
    with open(run / "logs/metrics.csv") as handle:
        logged = [row for row in csv.DictReader(handle) if row.get("val/acc")]
    assert final["acc"] == pytest.approx(float(logged[-1]["val/acc"]))
    assert abs(final["acc"] * 1797 - round(final["acc"] * 1797)) < 1e-3
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * (1797 // 128)  # saved at epoch end
    assert checkpoint["vtcc_config"]["model"]["embed_dim"] == 32


def test_resume_continues_from_the_saved_step(trained_run):
    first = trained_run / "outputs/train/first/checkpoints/last.ckpt"
    result = run_cli(
        "train",
        *TINY,
        "trainer.max_epochs=3",
        f"ckpt_path={first}",
        "hydra.run.dir=outputs/train/second",
        cwd=trained_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(trained_run / "outputs/train/second/checkpoints/last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 3 * (1797 // 128)
    with open(trained_run / "outputs/train/second/logs/metrics.csv") as handle:
        epochs = {row["epoch"] for row in csv.DictReader(handle) if row["train/loss"]}
    assert epochs == {"2"}  # only the new epoch was trained


def test_resume_latest_picks_the_newest_run(trained_run):
    result = run_cli(
        "train",
        *TINY,
        "trainer.max_epochs=4",
        "resume=latest",
        "hydra.run.dir=outputs/train/third",
        cwd=trained_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "outputs/train/second/checkpoints/last.ckpt" in result.stderr + result.stdout
    resumed = torch.load(trained_run / "outputs/train/third/checkpoints/last.ckpt", weights_only=True)
    assert resumed["epoch"] == 3


def test_eval_reproduces_the_final_metrics(trained_run, untouched_inputs):
    run = trained_run / "outputs/train/first"
    untouched_inputs(run)  # the run evaluated is the command's input: never changed
    result = run_cli(
        "evaluate",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "trainer.accelerator=cpu",
        "hydra.run.dir=outputs/eval/e1",
        cwd=trained_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((trained_run / "outputs/eval/e1/metrics.json").read_text())
    final = json.loads((run / "final_metrics.json").read_text())
    for key in ("acc", "nmi", "ari", "num_clusters"):
        assert written[key] == pytest.approx(final[key], abs=1e-9)
    printed, _ = json.JSONDecoder().raw_decode(result.stdout)
    assert printed["acc"] == pytest.approx(final["acc"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_clusters=1"], "num_clusters=1 must be an integer >= 2"),
        (["data.batch_size=1"], "at least 2 images"),
        (["module.optimizer.lr=0"], "module.optimizer.lr=0 must be a number > 0"),
        (["data.image_size=10"], "not divisible by patch size"),
        (["ckpt_path=missing.ckpt"], "does not exist"),
        (["resume=latest"], "found no checkpoints"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(train_in_process, overrides, message):
    code, stderr = train_in_process(*overrides)
    assert code == 2 and message in stderr
    assert stderr.startswith("vtcc: error: ") and stderr.count("\n") <= 1 and "Traceback" not in stderr


def test_unknown_config_choices_through_the_cli_are_one_clear_line(tmp_path):
    result = run_cli("train", *TINY, "model=no_such_model", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/no_such_model'" in result.stderr and "Traceback" not in result.stderr


# Every key of every config, in process: tests/unit/test_config_types.py; here one through the real CLI.
@pytest.mark.parametrize("override", ["time_budget_minutes=ten"])
def test_a_wrong_type_on_the_command_line_is_one_line_before_any_work(tmp_path, override):
    key = override.split("=")[0]
    result = run_cli("train", *TINY, override, "hydra.run.dir=outputs/run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"vtcc: error: {key}='ten' must be ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # Only what Hydra records before vtcc starts: no config.yaml, checkpoints, logs or caches.
    written = {p.relative_to(tmp_path / "outputs/run").as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p in written if not p.startswith(".hydra/")} <= {"train.log"}


def test_missing_data_through_the_cli_is_one_clear_line(tmp_path):
    result = run_cli("train", *TINY, "data=cifar10", f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "CIFAR-10 not found in" in result.stderr and "data.download=true" in result.stderr


def test_eval_of_a_file_that_is_no_checkpoint(tmp_path):
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    result = run_cli("evaluate", "ckpt_path=notes.ckpt", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a readable vtcc checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_the_run_records_its_environment_and_eval_warns_when_it_differs(trained_run, tmp_path, caplog):
    run = trained_run / "outputs/train/first"
    recorded = yaml.safe_load((run / "environment.yaml").read_text())
    assert recorded["command"].startswith("train.py ")  # python -m vtcc.train, with its overrides
    assert "hydra.run.dir=outputs/train/first" in recorded["command"]
    checkpoint = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint[ENVIRONMENT_KEY] == recorded
    checkpoint[ENVIRONMENT_KEY]["packages"]["torch"] = "1.0.0"
    torch.save(checkpoint, tmp_path / "elsewhere.ckpt")
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        restore_run(run / "checkpoints/last.ckpt")
        assert not caplog.records
        restore_run(tmp_path / "elsewhere.ckpt")
    assert len(caplog.records) == 1 and f"torch 1.0.0 -> {recorded['packages']['torch']}" in caplog.text


@pytest.fixture(scope="module")
def report(trained_run) -> Path:
    """``vtcc-eval report=true`` of the shared run: the report folder."""
    run = trained_run / "outputs/train/first"
    result = run_cli(
        "evaluate",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "trainer.accelerator=cpu",
        "report=true",
        "hydra.run.dir=outputs/eval/report",
        cwd=trained_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return trained_run / "outputs/eval/report/report"


FIGURES = ("clusters.png", "sizes.png", "confusion.png", "embedding.png", "curves.png")


def test_eval_report_files_are_valid_and_the_confusion_matrix_counts_every_image(trained_run, report):
    for name in FIGURES:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (report / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count('src="data:image/png;base64,') == len(FIGURES)
    # The page names the run, its data, its metrics, its settings and its environment.
    assert "run first" in page and "Data: <b>digits</b>" in page
    for text in ("<th>acc</th>", "<th>nmi</th>", "<h2>Settings</h2>", "<h2>Environment</h2>", "torchvision"):
        assert text in page, text
    confusion = np.loadtxt(report / "confusion.csv", delimiter=",")
    assert confusion.sum() == 1797 and confusion.shape[0] == 10
    final = json.loads((trained_run / "outputs/train/first/final_metrics.json").read_text())
    matched = min(confusion.shape)  # Hungarian pairs lead the diagonal: their sum is ACC x N
    assert np.trace(confusion[:matched, :matched]) / 1797 == pytest.approx(final["acc"], abs=1e-6)


def browser() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def chromium_or_skip() -> str:
    chromium = browser()
    if chromium is None:
        if os.environ.get("VTCC_REQUIRE_BROWSER"):
            pytest.fail("VTCC_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    return chromium


# A person's hover and click on the first mapped image, and what the page then shows.
EXPLORER_DRIVER = (Path(__file__).parents[1] / "explorer_driver.html").read_text()


def test_the_explorer_hovers_and_opens_a_cluster_in_a_real_browser(report, tmp_path):
    """The report's explorer in headless Chromium, from file://: no script error, one point per
    image (1,797 digits, under the sampling limit), a hover over the first image's point shows
    its thumbnail and cluster, and a click opens that cluster's gallery: all of its images,
    least confident first."""
    chromium = chromium_or_skip()
    page = (report / "report.html").read_text()
    driven = tmp_path / "report.html"
    driven.write_text(page.replace("</body>", EXPLORER_DRIVER + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    run = subprocess.run(
        [*flags, "--enable-logging=stderr", "--v=0", "--dump-dom", driven.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = run.stdout
    assert 'data-errors="0"' in dom and "Uncaught" not in run.stderr, run.stderr[-2000:]
    check = json.loads(html.unescape(re.search(r'data-check="([^"]*)"', dom).group(1)))
    assert check["points"] == "1797"
    assert not check["tipHidden"] and check["tipImage"] > 0, check
    assert f"cluster {check['pointCluster']}" in check["tipText"]
    assert check["gallery"] == str(check["pointCluster"])
    assert len(check["shown"]) == check["inCluster"] and check["decoded"]
    assert check["shown"] == sorted(check["shown"])  # least confident first
    if os.environ.get("VTCC_EXPLORER_SCREENSHOT"):  # docs/explorer.png: the same view, for people
        command = [
            *flags,
            f"--screenshot={os.environ['VTCC_EXPLORER_SCREENSHOT']}",
            "--window-size=1100,1300",
        ]
        subprocess.run([*command, driven.as_uri()], capture_output=True, timeout=120)


def test_the_report_renders_in_a_real_browser(report, tmp_path):
    """Headless Chromium loads report.html as a person would: every figure decodes, the page shows
    pictures (not blank boxes), and it names the run, its data and its metrics. CI installs
    Chromium (.ci/run sets VTCC_REQUIRE_BROWSER=1, so a missing browser fails there)."""
    chromium = chromium_or_skip()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    url = (report / "report.html").resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert f'data-figures-loaded="{len(FIGURES)}/{len(FIGURES)}"' in dom, dom[:500]
    assert "run first" in dom and "digits" in dom and "<th>acc</th>" in dom
    shot = tmp_path / "report.png"
    command = [*flags, f"--screenshot={shot}", "--window-size=1100,2400", url]
    subprocess.run(command, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    drawn = (pixels.min(axis=2) < 200).mean()  # ink: text, plot lines, images
    colours = len(np.unique(pixels.reshape(-1, 3) // 16, axis=0))
    assert drawn > 0.05 and colours > 50, (drawn, colours)


def test_a_user_error_raised_in_a_loader_worker_is_printed_as_its_own_line():
    """torch re-raises a worker's exception with the worker's traceback in its message; the CLI
    and the API show the message alone."""
    from torch.utils.data import DataLoader, Dataset

    from vtcc.errors import ConfigError
    from vtcc.utils.cli import one_line

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise ConfigError(
                "image 1 of shard-000000.tar cannot be read as an image: write the shards again"
            )

    with pytest.raises(ConfigError) as raised:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "\n" in str(raised.value)  # torch's wrapping, which one_line undoes
    assert (
        one_line(raised.value)
        == "image 1 of shard-000000.tar cannot be read as an image: write the shards again"
    )
    assert one_line(ConfigError("plain: one line")) == "plain: one line"
