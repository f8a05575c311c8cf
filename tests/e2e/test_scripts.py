"""Every script in scripts/ run as a user runs it, in its tiny mode: a subprocess on the CPU, on data
the test writes or the package ships (the embedded digits; nothing is downloaded), that must exit
0 and print a figure. A script added to scripts/ without a case here fails
:func:`test_every_script_has_a_tiny_mode`; a benchmark whose configuration fails must exit 1
naming it (:func:`test_the_benchmark_fails_loudly_naming_the_configuration_that_fails`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY, WARM
from vtcc.api.compose import compose_config
from vtcc.train import train_run

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
# The tiny model of the runs the scripts train (vtcc-train overrides: conftest.TINY's model).
TINY_MODEL = [item for item in TINY if item.startswith("model.")]
# Modules of the scripts with no command of their own: each is imported by a script run here.
HELPERS = {
    "folders.py": "the image folders of the own-folder benchmarks (benchmark_folder_defaults, baselines)",
    "train_runs.py": "one timed vtcc-train run of a benchmark script",
}
# Scripts that have no tiny mode here, and where they run instead.
ELSEWHERE = {
    "check_wheel.py": "installs torch and the wheel into a fresh venv from the package registry "
    "(a download, minutes): `make wheel-check`, a CI step",
}
COVERED: dict[str, str] = {}  # script: the test that runs it in its tiny mode


def covers(script: str):
    def register(test):
        COVERED[script] = test.__name__
        return test

    return register


def run_script(script: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python scripts/<script> <args>`` from ``cwd``, on the CPU, one thread per process."""
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # the CPU path, on a GPU machine too
        "OMP_NUM_THREADS": "1",
        "VTCC_LOG_DIR": str(cwd / "outputs"),
        "PYTHONWARNINGS": "ignore",
    }
    command = [sys.executable, str(SCRIPTS / script), *args]
    result = WARM.run(command, cwd=cwd, env=env, timeout=600)
    if check:
        assert result.returncode == 0, (
            f"{script} exited {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return result


def printed(pattern: str, result: subprocess.CompletedProcess) -> re.Match:
    """The figure ``pattern`` matches in the script's output (a line of its table)."""
    found = re.search(pattern, result.stdout, re.MULTILINE)
    assert found, f"no {pattern!r} in:\n{result.stdout[-3000:]}"
    return found


def write_pngs(root: Path, per_class: int = 16, size: int = 8) -> Path:
    """Two classes of gray PNGs (a horizontal and a vertical bar, with noise) in class folders."""
    rng = np.random.default_rng(0)
    for label in range(2):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, (size, size))
            if label:
                pixels[:, size // 2 - 1 : size // 2 + 1] += 195
            else:
                pixels[size // 2 - 1 : size // 2 + 1, :] += 195
            Image.fromarray(pixels.astype(np.uint8)).save(root / str(label) / f"{index:05d}.png")
    return root


def train_tiny(run_dir: Path, *overrides: str) -> Path:
    """A 1-epoch run of the tiny model (vtcc-train's assembly, in this process); its folder."""
    kept = [item for item in TINY if not item.startswith(("trainer.max_epochs=", "report="))]
    report = [] if any(item.startswith("report=") for item in overrides) else ["report=false"]
    items = [*kept, "trainer.max_epochs=1", *report, *overrides, f"paths.output_dir={run_dir}"]
    train_run(compose_config("train", items), items)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model on the embedded digits, two cluster heads, no report: the run the scripts
    that read a run start from."""
    return train_tiny(tmp_path_factory.mktemp("scripts") / "run", "module.num_cluster_heads=2")


def test_every_script_has_a_tiny_mode():
    """Each scripts/*.py is run below, or is a helper of those, or says where it runs instead."""
    scripts = {path.name for path in SCRIPTS.glob("*.py")}
    unaccounted = scripts - set(COVERED) - set(HELPERS) - set(ELSEWHERE)
    assert not unaccounted, f"add a tiny-mode test to tests/e2e/test_scripts.py for {sorted(unaccounted)}"
    assert not (set(COVERED) | set(HELPERS) | set(ELSEWHERE)) - scripts, "a listed script is gone"
    sources = {name: (SCRIPTS / name).read_text() for name in scripts}
    for helper in HELPERS:
        assert "__main__" not in sources[helper], f"{helper} has a command: give it a tiny-mode test"
        module = helper.removesuffix(".py")
        users = [name for name in COVERED if re.search(rf"^from {module} import", sources[name], re.M)]
        assert users, f"no script run here imports {helper}"


def test_no_script_instantiates_a_composed_config_itself():
    """Scripts build runs through vtcc.config.resolve and vtcc.build (or the CLI, vtcc.api)."""
    for path in sorted(SCRIPTS.glob("*.py")):
        text = path.read_text()
        for forbidden in (
            "hydra.utils",
            "instantiate(",
            "build_object(",
            "initialize_config_dir",
            "from hydra",
        ):
            assert forbidden not in text, f"{path.name} uses {forbidden}"


@covers("benchmark.py")
def test_the_benchmark_prints_figures_on_the_cpu(tmp_path):
    """``make bench``'s default CPU mode (the digits configuration, built as vtcc-train builds it),
    at a batch of 32 (CI runs ``make bench`` itself at the configuration's own batch)."""
    result = run_script("benchmark.py", "--steps", "1", "--override", "data.batch_size=32", cwd=tmp_path)
    row = printed(r"^digits\s+(\d+\.\d)\s+(\d+\.\d)\s+\d+\.\d\d\s+(\d+\.\d)", result)
    assert all(float(figure) > 0 for figure in row.groups())
    assert "FAILED" not in result.stderr


def test_the_benchmark_fails_loudly_naming_the_configuration_that_fails(tmp_path):
    """A configuration that fails (here in resolve: more clusters than images) is named with its
    error, and the benchmark exits 1 (it used to print an empty table and exit 0)."""
    result = run_script(
        "benchmark.py", "--steps", "1", "--override", "num_clusters=5000", cwd=tmp_path, check=False
    )
    assert result.returncode == 1, result.stderr[-3000:]
    failed = re.search(
        r"^FAILED digits \(overrides: num_clusters=5000\): ConfigError: (.*)$", result.stderr, re.M
    )
    assert failed and "num_clusters=5000" in failed.group(1), result.stderr[-3000:]  # the error's own line
    assert not re.search(r"^digits\s+\d", result.stdout, re.MULTILINE)


@covers("gpu_check.py")
def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    """``make gpu-check``'s CPU path (--steps 1): the GPU tests collected, the training benchmark
    through scripts/benchmark.py, the extraction; the summary with their figures."""
    out = tmp_path / "out"
    result = run_script(
        "gpu_check.py", "--steps", "1", "--out", str(out), "--wheels", str(tmp_path / "none"), cwd=tmp_path
    )
    assert "the GPU tests were not run" in result.stdout
    printed(r"^\| digits \| 64 \| fp32 \| [1-9]\d* \| [1-9]\d* \|", result)
    printed(r"^feature extraction vit_small_patch16_224: \d+\.\d images/s", result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training"][0]["full_loop_img_s"] > 0 and "error" not in summary["training"][0]


@covers("baselines.py")
def test_baselines(tmp_path):
    folder = write_pngs(tmp_path / "bars")
    result = run_script("baselines.py", str(folder), "--seeds", "0", "--methods", "kmeans", cwd=tmp_path)
    row = json.loads(printed(r"^\{.*\}$", result).group(0))
    assert row["method"] == "kmeans" and 0 <= row["acc"] <= 1


@covers("benchmark_data.py")
def test_benchmark_data(tmp_path):
    result = run_script("benchmark_data.py", "--images", "10", "--batch", "4", "--sizes", "32", cwd=tmp_path)
    printed(r"^decode folder \(JPEG 256 px\)\s+32\s+[1-9]\d*$", result)
    for preset in ("small", "cc", "vtcc"):
        printed(rf"^augment={preset} \(two views\)\s+32\s+[1-9]\d*$", result)


@covers("benchmark_folder_defaults.py")
def test_benchmark_folder_defaults(tmp_path):
    """Its digits8 case on a small folder written first (the script reuses a folder already there)."""
    write_pngs(tmp_path / "bench" / "digits8")
    extra = ["trainer.max_epochs=1", "module.num_cluster_heads=2", *TINY_MODEL, "data.batch_size=16"]
    args = ["--out", str(tmp_path / "bench"), "--cases", "digits8:auto", "--extra", *extra]
    result = run_script("benchmark_folder_defaults.py", *args, cwd=tmp_path)
    printed(r"^digits8:auto\s+1\s+\d+\s+\d+\s+\w+\s+\d\.\d\s+\d\.\d\s+\d+\s+1\s+\d+s\s+\d\.\d{3}", result)
    assert '"head_acc": [' in result.stdout  # each of the two heads scored


@covers("headroom.py")
def test_headroom(tmp_path):
    """Each head of a run on a labelled folder, then k-means on its two representations."""
    folder = write_pngs(tmp_path / "bars")
    run = train_tiny(tmp_path / "run", "data=folder", f"data.root={folder}", "data.batch_size=16")
    result = run_script("headroom.py", str(run), str(folder), cwd=tmp_path)
    printed(r"^  head 0( \(kept\))?: \d\.\d{3} / \d\.\d{3}$", result)
    for space in ("backbone features", "instance embedding"):
        printed(rf"^  k-means on the {space} \(\d+ dims, L2-normalised\): \d\.\d{{3}} / \d\.\d{{3}}$", result)
    flat = run_script("headroom.py", str(run), str(folder / "0"), cwd=tmp_path, check=False)
    assert flat.returncode == 2 and "flat folder" in flat.stderr  # says so, and fails


@covers("head_choice.py")
def test_head_choice(tmp_path):
    """Three heads of a run on a labelled folder: each head's ACC, and the ACC of the head each
    label-free rule keeps (the loss rule's from the run's metrics.csv)."""
    folder = write_pngs(tmp_path / "bars")
    train_tiny(
        tmp_path / "runs" / "three",
        "data=folder",
        f"data.root={folder}",
        "data.batch_size=16",
        "module.num_cluster_heads=3",
    )
    result = run_script("head_choice.py", str(tmp_path / "runs"), "--json", "rows.jsonl", cwd=tmp_path)
    printed(r"^three\s+(\d\.\d{3} ){2}\d\.\d{3}(\s+\d\.\d{3}){4}$", result)
    printed(r"^  bars \(1 runs\)", result)
    row = json.loads((tmp_path / "rows.jsonl").read_text())
    assert set(row["picks"]) == {"structure", "consensus", "both", "loss"} and len(row["head_acc"]) == 3
    none = run_script("head_choice.py", str(folder), cwd=tmp_path, check=False)
    assert none.returncode == 2 and "no finished run" in none.stderr  # one line, a user mistake


@covers("overcluster_merge.py")
def test_overcluster_merge(tmp_path):
    """A run over-clustered at 4 on two kinds, each head merged down to 2, beside k-means at 2."""
    folder = write_pngs(tmp_path / "bars")
    overrides = ["data=folder", f"data.root={folder}", "data.batch_size=16", "num_clusters=4"]
    train_tiny(tmp_path / "runs" / "four", *overrides, "module.num_cluster_heads=2")
    runs = str(tmp_path / "runs")
    result = run_script("overcluster_merge.py", runs, "--clusters", "2", "--json", "rows.jsonl", cwd=tmp_path)
    printed(r"^four\s+4\s+[1-4](\s+\d\.\d{3}){8}\s+\d\.\d{3} \d\.\d{3}$", result)
    row = json.loads((tmp_path / "rows.jsonl").read_text())
    assert row["trained_k"] == 4 and row["k"] == 2 and len(row["heads_acc"]) == 2
    assert row["clusters_after"] == min(2, row["clusters_before"])  # merged down to 2, never below
    none = run_script("overcluster_merge.py", runs, "--clusters", "4", cwd=tmp_path, check=False)
    assert none.returncode == 2 and "no finished run" in none.stderr  # nothing above 4 to merge: says so
    one = run_script("overcluster_merge.py", runs, "--clusters", "1", cwd=tmp_path, check=False)
    assert one.returncode == 2 and one.stderr.strip().endswith("merge to at least 2 clusters")


@covers("benchmark_k_selection.py")
def test_benchmark_k_selection(tmp_path):
    args = [
        "--out",
        str(tmp_path / "k"),
        "--cases",
        "digits5_flat",
        "--epochs",
        "1",
        "--override",
        *TINY_MODEL,
    ]
    result = run_script("benchmark_k_selection.py", *args, cwd=tmp_path)
    printed(r"^digits5_flat\s+5\s+\d+\s+-\s+-\s+-\s+\d+s\s+silhouette=\d+", result)


@covers("benchmark_neighbors.py")
def test_benchmark_neighbors(tmp_path):
    args = ["--sizes", "300", "--dim", "8", "--k", "5", "--exact-up-to", "300"]
    result = run_script("benchmark_neighbors.py", *args, cwd=tmp_path)
    printed(r"^\s+300 exact\s+\d+\.\d", result)
    recall = printed(r"^\s+300 faiss\s+\d+\.\d\s+\d+\.\d\d\s+\d+\.\d\d\s+(\d\.\d{5})$", result)
    assert float(recall.group(1)) > 0.5


@covers("benchmark_pretrained.py")
def test_benchmark_pretrained(tmp_path, trained_run):
    args = [
        "--backbone",
        str(trained_run / "checkpoints" / "last.ckpt"),
        "--epochs",
        "1",
        "--cifar-images",
        "512",
    ]
    result = run_script("benchmark_pretrained.py", *args, "--extra", "report=false", cwd=tmp_path)
    printed(r"^feature extraction: [1-9]\d* images/s", result)
    printed(r"^head training on .*: \d+\.\d s/epoch$", result)
    for objective in ("contrastive", "scan"):
        printed(rf"^frozen VTCC backbone \+ {objective} heads\s+\d\.\d{{3}}", result)


@covers("benchmark_selflabel.py")
def test_benchmark_selflabel(tmp_path):
    result = run_script("benchmark_selflabel.py", "--out", str(tmp_path / "sl"), "--tiny", cwd=tmp_path)
    for run in ("e2e_1", "e2e_1+sl", "frozen_temi"):
        printed(rf"^{re.escape(run)}\s+42\s+\d\.\d{{3}}\s+\d\.\d{{3}}", result)


@covers("benchmark_curation.py")
def test_benchmark_curation(tmp_path):
    result = run_script("benchmark_curation.py", "--out", str(tmp_path / "cur"), "--tiny", cwd=tmp_path)
    for run in ("over", "curated", "fine"):
        printed(rf"^\| {run} \| \d+ \| \d\.\d{{3}} \| \d\.\d{{3}} \|$", result)


@covers("benchmark_shards.py")
def test_benchmark_shards(tmp_path):
    args = ["--images", "20", "--side", "8", "--shard-size", "10", "--workers", "0", "--batch", "4"]
    result = run_script("benchmark_shards.py", *args, "--root", str(tmp_path / "shards"), cwd=tmp_path)
    for reader in ("folder_streaming", "shards, order=stream", "shards, order=global"):
        printed(rf"^\| {reader} \| 0 \| [1-9][\d,]* \| 20 \|$", result)


@covers("benchmark_turtle.py")
def test_benchmark_turtle(tmp_path, trained_run):
    checkpoint = str(trained_run / "checkpoints" / "last.ckpt")
    args = ["--out", str(tmp_path / "turtle"), "--backbones", checkpoint, checkpoint, "--spaces", "A"]
    args += ["--methods", "kmeans", "turtle", "--seeds", "42", "--turtle-epochs", "1"]
    result = run_script("benchmark_turtle.py", *args, cwd=tmp_path)
    printed(r"^A\s+kmeans\s+\d\.\d{3}\s+\d\.\d{3}", result)
    printed(r"^A\s+turtle\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}\s+\d+\.\d\s+\d\.\d{3}$", result)


@covers("choose_supported_head.py")
def test_choose_supported_head(tmp_path, trained_run):
    run = shutil.copytree(trained_run, tmp_path / "run")  # the script records the head in its checkpoint
    result = run_script("choose_supported_head.py", str(run), cwd=tmp_path)
    printed(r"^run: head [01] \(lowest loss: [01]\); structure \[-?\d\.\d+, -?\d\.\d+\]$", result)


@covers("digits_baselines.py")
def test_digits_baselines(tmp_path):
    result = run_script("digits_baselines.py", "--seeds", "1", "--no-umap", cwd=tmp_path)
    printed(r"^k-means on raw pixels \(mean of 1 seeds\)\s+0\.\d{3}\s+0\.\d{3}\s+0\.\d{3}$", result)


@covers("evaluate.py")
def test_evaluate(tmp_path, trained_run):
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    result = run_script("evaluate.py", f"ckpt_path={checkpoint}", "trainer.accelerator=cpu", cwd=tmp_path)
    printed(r'^\s+"acc": 0\.\d+,$', result)


@covers("explorer_screenshot.py")
def test_explorer_screenshot(tmp_path):
    """The report of a run on 32 small images, in headless Chromium (CI installs it: .ci/run sets
    VTCC_REQUIRE_BROWSER=1)."""
    if not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))):
        if os.environ.get("VTCC_REQUIRE_BROWSER"):
            pytest.fail("VTCC_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    folder = write_pngs(tmp_path / "bars")
    run = train_tiny(
        tmp_path / "run", "data=folder", f"data.root={folder}", "data.batch_size=16", "report=true"
    )
    shot = tmp_path / "explorer.png"
    result = run_script(
        "explorer_screenshot.py", str(run / "report" / "report.html"), str(shot), cwd=tmp_path
    )
    printed(rf"^written {re.escape(str(shot))}$", result)
    assert Image.open(shot).size[0] > 0


@covers("validate_quality.py")
def test_validate_quality(tmp_path):
    """Three scored runs (written here): structure ranks them as their ACC does."""
    for index, (acc, structure, stability) in enumerate([(0.5, 0.1, 0.2), (0.7, 0.3, 0.4), (0.9, 0.6, 0.3)]):
        run = tmp_path / "runs" / f"run{index}"
        (run / "report").mkdir(parents=True)
        (run / "final_metrics.json").write_text(json.dumps({"acc": acc, "nmi": acc - 0.1}))
        (run / "report" / "quality.json").write_text(
            json.dumps({"structure": structure, "stability": stability})
        )
        (run / "config.yaml").write_text("data:\n  root: bars\n")
    result = run_script("validate_quality.py", str(tmp_path / "runs"), cwd=tmp_path)
    printed(r"^all runs \(3 runs\): Spearman\(structure, ACC\) = 1\.000, NMI 1\.000$", result)
    printed(r"^all runs \(3 runs\): Spearman\(stability, ACC\) = 0\.500, NMI 0\.500$", result)
    # --rescore: a real run on a labelled folder (its report's figures written here); the fake runs'
    # data "bars" is no folder here, so they are left out
    folder = write_pngs(tmp_path / "labelled")
    run = train_tiny(
        tmp_path / "real",
        "data=folder",
        f"data.root={folder}",
        "data.batch_size=16",
        "module.num_cluster_heads=2",
    )
    (run / "report").mkdir()
    (run / "report" / "quality.json").write_text(json.dumps({"structure": 0.5, "stability": 0.5}))
    (run / "final_metrics.json").write_text(json.dumps({"acc": 0.5, "nmi": 0.1}))
    result = run_script("validate_quality.py", str(tmp_path / "runs"), str(run), "--rescore", cwd=tmp_path)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [row["run"] for row in rows] == ["real"]
    assert all(0.0 <= rows[0][name] <= 1.0 for name in ("structure_nmi", "neighbours", "generalization"))
    assert -0.5 <= rows[0]["heads"] <= 1.0  # an ARI
