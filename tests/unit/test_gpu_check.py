"""`make gpu-check`: every step that fails is named and makes it exit 1; without CUDA the
measurements run as a CPU smoke check (the real run of that path: tests/e2e/test_scripts.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    return gpu_check


def fake_check(monkeypatch, cuda: bool):
    """gpu_check with or without CUDA, its steps replaced by recorders (each call's arguments)."""
    gpu_check = load_gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    info = {"python": "3", "torch": "2", "cuda": cuda, **({"device": "H100"} if cuda else {})}
    monkeypatch.setattr(gpu_check, "environment", lambda: info)
    calls = {"tests": [], "training": [], "extraction": []}

    def tests(env, timeout):
        calls["tests"].append(timeout)
        return {"exit_code": 0, "summary": "4 passed"}

    def training(env, config, batch, precision, steps, timeout, device="cuda"):
        calls["training"].append((config, batch, precision, steps, device))
        figures = {"full_loop_img_s": 600.0, "plain_loop_img_s": 650.0, "utilisation": 0.3}
        row = {"config": config, "batch": batch, "precision": precision, **figures}
        return {**row, "peak_memory_mb": 900.0, "cifar_epoch_seconds": 100.0}

    def extraction(name, batch=256, steps=10, device="cuda"):
        calls["extraction"].append((name, batch, steps, device))
        return {"model": name, "batch": batch, "images_per_s": 40.0}

    monkeypatch.setattr(gpu_check, "gpu_tests", tests)
    monkeypatch.setattr(gpu_check, "training_benchmark", training)
    monkeypatch.setattr(gpu_check, "feature_extraction", extraction)
    return gpu_check, calls


def run_main(gpu_check, tmp_path: Path, *args: str) -> int:
    return gpu_check.main(["--wheels", str(tmp_path / "none"), "--out", str(tmp_path / "out"), *args])


def test_without_cuda_the_measurements_run_as_a_cpu_smoke_check(tmp_path, monkeypatch):
    gpu_check, calls = fake_check(monkeypatch, cuda=False)
    assert run_main(gpu_check, tmp_path, "--steps", "1") == 0
    assert calls["tests"] == []  # make test skips them without CUDA
    assert calls["training"] == [("digits", 64, "fp32", 1, "cpu")]
    assert calls["extraction"] == [("vit_small_patch16_224", 2, 1, "cpu")]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["environment"]["cuda"] is False and gpu_check.failures(summary) == []
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "not GPU figures" in text and "| digits | 64 | fp32 | 600 |" in text and "Failed" not in text


def test_with_cuda_the_tests_and_every_gpu_measurement_run(tmp_path, monkeypatch):
    gpu_check, calls = fake_check(monkeypatch, cuda=True)
    assert run_main(gpu_check, tmp_path) == 0
    assert len(calls["tests"]) == 1
    precisions = ["fp32", "bf16", "bf16+compile"]
    expected = [("vit_small_224", batch, p, 20, "cuda") for batch in (128, 256) for p in precisions]
    assert calls["training"] == expected
    assert [call[0] for call in calls["extraction"]] == ["vit_small_patch16_224", "vit_base_patch16_224"]
    assert "not GPU figures" not in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("step", ["tests", "training", "extraction"])
def test_any_step_that_fails_makes_the_check_exit_1_and_is_named(tmp_path, monkeypatch, capsys, step):
    gpu_check, _ = fake_check(monkeypatch, cuda=True)
    if step == "tests":
        failed = {"summary": "", "error": "no gpu-marked tests were collected"}
        monkeypatch.setattr(gpu_check, "gpu_tests", lambda *args, **kwargs: failed)
        named = "gpu tests: no gpu-marked tests were collected"
    elif step == "training":
        failed = {"config": "vit_small_224", "batch": 128, "precision": "bf16", "error": "FAILED x: bad"}
        monkeypatch.setattr(gpu_check, "training_benchmark", lambda *args, **kwargs: failed)
        named = "training vit_small_224 batch 128 bf16: FAILED x: bad"
    else:

        def broken(*args, **kwargs):
            raise RuntimeError("no such model")

        monkeypatch.setattr(gpu_check, "feature_extraction", broken)
        named = "feature extraction vit_small_patch16_224: RuntimeError('no such model')"
    assert run_main(gpu_check, tmp_path) == 1
    assert f"FAILED {named}" in capsys.readouterr().err
    assert named in (tmp_path / "out" / "summary.md").read_text()  # the summary is written all the same


def test_wheels_that_do_not_install_fail_the_check_before_any_step(tmp_path, monkeypatch):
    gpu_check, calls = fake_check(monkeypatch, cuda=True)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "broken-1.0-py3-none-any.whl").write_bytes(b"not a wheel")
    assert gpu_check.main(["--wheels", str(tmp_path / "wheels"), "--out", str(tmp_path / "out")]) == 1
    assert calls == {"tests": [], "training": [], "extraction": []}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert gpu_check.failures(summary)[0].startswith("wheels: pip install of 1 wheels: exit")


@pytest.mark.parametrize(
    ("exit_code", "error"),
    [(0, None), (1, "pytest exit 1: 1 failed, 3 passed"), (5, "no gpu-marked tests were collected")],
)
def test_the_gpu_tests_step_fails_on_a_failing_test_or_none_collected(monkeypatch, exit_code, error):
    gpu_check = load_gpu_check()
    commands = []

    def pytest_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, exit_code, stdout="...\n1 failed, 3 passed\n", stderr="")

    monkeypatch.setattr(gpu_check.subprocess, "run", pytest_run)
    outcome = gpu_check.gpu_tests({}, timeout=5)
    assert commands[0][1:5] == ["-m", "pytest", "-m", "gpu"]
    assert outcome.get("error") == error and outcome["exit_code"] == exit_code


def test_a_gpu_tests_step_that_times_out_fails(monkeypatch):
    gpu_check = load_gpu_check()

    def hangs(command, timeout, **kwargs):
        raise subprocess.TimeoutExpired(command, timeout)

    monkeypatch.setattr(gpu_check.subprocess, "run", hangs)
    assert gpu_check.gpu_tests({}, timeout=5)["error"] == "timed out after 5 s"


def test_the_gpu_summary_table_has_a_row_per_measurement(tmp_path):
    gpu_check = load_gpu_check()
    row = {
        "config": "vit_small_224",
        "batch": 128,
        "precision": "bf16",
        "full_loop_img_s": 2000.0,
        "plain_loop_img_s": 2100.0,
        "utilisation": 0.4,
        "peak_memory_mb": 9000.0,
        "cifar_epoch_seconds": 30.0,
    }
    summary = {
        "environment": {"python": "3.12", "torch": "2", "cuda": True, "device": "H100"},
        "tests": {"summary": "3 passed"},
        "training": [
            row,
            {"config": "vit_small_224", "batch": 256, "precision": "fp32", "error": "out of memory"},
        ],
        "extraction": [{"model": "vit_small_patch16_224", "images_per_s": 5000.0}],
    }
    text = gpu_check.markdown(summary)
    assert "| vit_small_224 | 128 | bf16 | 2000 | 2100 | 40.0% | 9000 MB | 30.0 |" in text
    assert (
        "| vit_small_224 | 256 | fp32 | failed |" in text and "vit_small_patch16_224: 5000.0 images/s" in text
    )
    assert "- training vit_small_224 batch 256 fp32: out of memory" in text  # under Failed


def test_a_benchmark_row_that_fails_carries_the_benchmarks_failed_line(monkeypatch):
    gpu_check = load_gpu_check()
    stderr = "Traceback ...\nFAILED vit_small_224 (overrides: data.batch_size=128): ConfigError: bad\n"

    def benchmark(command, **kwargs):
        assert (
            command[1].endswith("benchmark.py") and command[command.index("--configs") + 1] == "vit_small_224"
        )
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(gpu_check.subprocess, "run", benchmark)
    row = gpu_check.training_benchmark({}, "vit_small_224", 128, "bf16", steps=1, timeout=5)
    assert row["error"] == "FAILED vit_small_224 (overrides: data.batch_size=128): ConfigError: bad"
    assert gpu_check.failures({"training": [row], "extraction": []}) == [
        f"training vit_small_224 batch 128 bf16: {row['error']}"
    ]
