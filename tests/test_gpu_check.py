"""`make gpu-check` on a machine without CUDA: it says so, writes its summary and exits 0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_without_cuda_writes_a_summary_and_skips_the_gpu_parts(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--wheels", str(tmp_path / "no_wheels"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["environment"]["cuda"] is False
    assert summary["tests"] is None and summary["training"] == [] and summary["extraction"] == []
    assert "skipped" in (tmp_path / "out" / "summary.md").read_text()


def test_the_gpu_summary_table_has_a_row_per_measurement(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    row = {
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
        "training": [row, {"batch": 256, "precision": "fp32", "error": "out of memory"}],
        "extraction": [{"model": "vit_small_patch16_224", "images_per_s": 5000.0}],
    }
    text = gpu_check.markdown(summary)
    assert "| 128 | bf16 | 2000 | 2100 | 40.0% | 9000 MB | 30.0 |" in text
    assert "| 256 | fp32 | failed |" in text and "vit_small_patch16_224: 5000.0 images/s" in text
