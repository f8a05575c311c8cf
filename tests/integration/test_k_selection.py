"""num_clusters=auto: the candidate range, the label-free criteria, and a run that writes its
chosen K as an integer (so eval, predict and resume work) without ever reading a label."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import load_digits

from vtcc.build import restore_run
from vtcc.errors import ConfigError
from vtcc.k_selection import CRITERIA, choose, score_candidates, search_range
from vtcc.report.figures import k_selection_figure
from vtcc.utils.callbacks.time_budget import TimeBudget


def test_the_default_range_is_2_to_50_or_a_tenth_of_the_images():
    assert search_range(2, None, 1797) == list(range(2, 51))
    assert search_range(2, None, 300) == list(range(2, 31))
    assert search_range(4, 6, 900) == [4, 5, 6]


@pytest.mark.parametrize(
    ("k_min", "k_max", "images", "message"),
    [
        (1, 10, 500, "k_search.min=1"),
        (2, 500, 500, "k_search.max=500 is not below the 500 images"),
        (2, None, 15, "an empty range for 15 images"),
    ],
)
def test_a_range_that_cannot_work_is_refused(k_min, k_max, images, message):
    with pytest.raises(ConfigError, match=message):
        search_range(k_min, k_max, images)


def blobs(k: int, per_cluster: int = 60, dim: int = 16, spread: float = 0.15) -> np.ndarray:
    """``k`` tight clusters around orthogonal unit directions: the true K is ``k`` by construction."""
    rng = np.random.default_rng(0)
    centres = np.eye(dim)[:k]
    return np.concatenate([c + spread * rng.standard_normal((per_cluster, dim)) for c in centres])


@pytest.mark.parametrize("true_k", [3, 6])
def test_every_criterion_finds_well_separated_clusters(true_k):
    rows = score_candidates(blobs(true_k), list(range(2, 11)))
    assert [row["k"] for row in rows] == list(range(2, 11))
    for criterion in set(CRITERIA) - {"generalization"}:
        assert choose(rows, criterion) == true_k, criterion


@pytest.mark.parametrize("true_k", [3, 6])
def test_the_generalisation_criterion_prefers_merged_clusters(true_k):
    """TURTLE's score on separated blobs: any K up to the true one merges whole blobs, which stay
    linearly separable (about 1.0); beyond it, k-means cuts blobs and the cuts are harder to
    learn. Ties at the top go to the smallest K, below the true one: its bias toward small K."""
    rows = score_candidates(blobs(true_k), list(range(2, 11)), criterion="generalization")
    scores = {row["k"]: row["generalization"] for row in rows}
    assert all(scores[k] > 0.99 for k in range(2, true_k + 1))
    assert np.mean([scores[k] for k in range(true_k + 1, 11)]) < min(scores[k] for k in range(2, true_k + 1))
    assert choose(rows, "generalization") < true_k
    assert all(math.isnan(row["generalization"]) for row in score_candidates(blobs(3), [2, 3]))


def test_an_unknown_criterion_is_named():
    with pytest.raises(ConfigError, match="k_search.criterion='gap' is unknown"):
        choose([{"k": 2}], "gap")


AUTO = ["num_clusters=auto", "k_search.min=2", "k_search.max=5", "trainer.max_epochs=2", "callbacks=default"]


def write_digits_npz(path: Path, permute_labels: bool) -> Path:
    digits = load_digits()
    labels = digits.target
    if permute_labels:
        labels = labels[np.random.default_rng(1).permutation(len(labels))]
    np.savez(path, x=(digits.images[:600] * 16).clip(0, 255).astype(np.uint8), y=labels[:600])
    return path


def test_auto_writes_an_integer_k_that_eval_and_resume_use_and_never_reads_labels(
    train_in_process, tmp_path, untouched_inputs
):
    """Two runs on the same images, one with its labels shuffled: the same candidates, scores
    and K (labels only score). The run's config and checkpoint carry the chosen integer K."""
    tables = []
    for permute in (False, True):
        npz = write_digits_npz(tmp_path / f"digits_{permute}.npz", permute)
        untouched_inputs(npz)
        run = tmp_path / f"run_{permute}"
        data = ["data=npz", f"data.root={npz}", "data.in_chans=1", "data.image_size=8"]
        code, stderr = train_in_process(*data, *AUTO, f"paths.output_dir={run}")
        assert code == 0, stderr[-2000:]
        tables.append((run / "k_selection.csv").read_text())
    assert tables[0] == tables[1]
    rows = list(csv.DictReader(tables[0].splitlines()))
    assert [int(r["k"]) for r in rows] == [2, 3, 4, 5]
    chosen = [int(r["k"]) for r in rows if r["chosen"] == "davies_bouldin"]  # the default criterion
    scores = {int(r["k"]): float(r["davies_bouldin"]) for r in rows}
    assert chosen == [min(scores, key=scores.get)]  # Davies-Bouldin: lower is better
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["num_clusters"] == chosen[0] and config["model"]["num_clusters"] == chosen[0]
    run_cfg, module = restore_run(run / "checkpoints" / "last.ckpt")
    assert run_cfg.num_clusters == chosen[0] and module.network.num_clusters == chosen[0]
    probabilities = module.network.cluster_probabilities(torch.randn(3, 1, 8, 8))
    assert probabilities.shape == (3, chosen[0])
    k_selection_figure(run / "k_selection.csv", tmp_path / "k_selection.png")  # the report's plot
    assert (tmp_path / "k_selection.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["k_search.min=1"], "k_search.min=1"),
        (["k_search.max=1797"], "k_search.max=1797 is not below the 1797 images"),
        (["k_search.criterion=gap"], "k_search.criterion='gap' is unknown"),
        (["ckpt_path=somewhere.ckpt"], "num_clusters=auto starts a new run"),
    ],
)
def test_bad_auto_settings_are_one_line_and_write_nothing(train_in_process, tmp_path, overrides, message):
    code, stderr = train_in_process("num_clusters=auto", *overrides)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


def auto_run_settings(npz: Path, output: Path, *extra: str) -> list[str]:
    data = ["data=npz", f"data.root={npz}", "data.in_chans=1", "data.image_size=8"]
    every_epoch = [  # each refine epoch's checkpoint kept (checkpoints/refine_<i>.ckpt)
        "callbacks.last_checkpoint.save_top_k=-1",
        "callbacks.last_checkpoint.filename='refine_{epoch}'",
        "+callbacks.last_checkpoint.auto_insert_metric_name=false",
    ]
    return [*data, *AUTO, "k_search.refine_epochs=3", *every_epoch, f"paths.output_dir={output}", *extra]


def test_a_resumed_refine_phase_continues_the_same_plan_bit_for_bit(train_in_process, tmp_path):
    """Stopped after the first of 3 refine epochs and resumed with the integer K (as the message
    says): the same refine epochs and schedule, so the same weights as the uninterrupted run."""
    from tests.conftest import assert_same_training_state

    npz = write_digits_npz(tmp_path / "digits.npz", permute_labels=False)
    schedule = "module.scheduler={_target_:vtcc.optim.warmup_cosine,_partial_:true,warmup_steps:2}"
    code, stderr = train_in_process(*auto_run_settings(npz, tmp_path / "whole", schedule))
    assert code == 0, stderr[-2000:]
    config = yaml.safe_load((tmp_path / "whole/config.yaml").read_text())
    k = config["num_clusters"]
    assert config["k_search"]["chosen"] == k and config["k_search"]["refine_epochs"] == 3
    first = tmp_path / "whole/checkpoints/refine_0.ckpt"
    settings = [s for s in auto_run_settings(npz, tmp_path / "resumed", schedule) if s != "num_clusters=auto"]
    code, stderr = train_in_process(*settings, f"num_clusters={k}", f"ckpt_path={first}")
    assert code == 0, stderr[-2000:]
    whole = torch.load(tmp_path / "whole/checkpoints/refine_2.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed/checkpoints/refine_2.ckpt", weights_only=True)
    assert whole["epoch"] == 2  # three refine epochs, not trainer.max_epochs=2 of the search
    assert_same_training_state(whole, resumed)


def test_the_k_search_counts_against_the_time_budget(train_in_process, tmp_path, monkeypatch):
    """The search trains within its share of the budget (2 of the run's 2 + 3 epochs), and the
    refine phase's budget counts from the same start: the whole run fits the one budget."""
    import vtcc.train

    made: list[TimeBudget] = []

    class Recorded(TimeBudget):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(vtcc.train, "TimeBudget", Recorded)
    npz = write_digits_npz(tmp_path / "digits.npz", permute_labels=False)
    code, stderr = train_in_process(*auto_run_settings(npz, tmp_path / "run", "time_budget_minutes=0.05"))
    assert code == 0, stderr[-2000:]
    search, refine = made
    assert search.seconds == pytest.approx(3 * 2 / 5) and refine.seconds == pytest.approx(3)
    assert search.started_at is not None and refine.started_at == search.started_at
