"""Training with a person's curation (``vtcc-train init_from=<run> curation=<file>``, objective=curated):
the final clusters and their order, each image's target, the new run's clusters, and the one-line
refusals. The person is simulated on a separable folder: its true classes say which clusters to
merge and where to move an image (labels stand for the person looking at the galleries)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import assert_same_training_state, compose_train, evaluate_in_process, last_checkpoint
from vtcc.build import restore_run
from vtcc.curation import Curated, curation_from_record, read_curation
from vtcc.data.batch import TrainingPair
from vtcc.errors import ConfigError
from vtcc.inference import Assigner
from vtcc.objectives.curated import NO_TARGET, curated_targets
from vtcc.train import train_run

CLASSES, PER_CLASS, OVER = 4, 128, 8  # K = 8 clusters over 4 kinds of images
CURATED = ["objective=curated", "module.threshold=0.5", "module.optimizer.lr=1e-3"]
FOLDER = ["data=folder", "data.batch_size=64", "data.image_size=8"]


def write_quadrants(root: Path) -> Path:
    """4 classes of 8x8 gray images, each bright in its own quadrant (noise elsewhere)."""
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        (root / str(label)).mkdir(parents=True)
        for index in range(PER_CLASS):
            image = rng.integers(0, 60, size=(8, 8))
            row, column = divmod(label, 2)
            image[4 * row : 4 * row + 4, 4 * column : 4 * column + 4] += 180
            Image.fromarray(image.astype(np.uint8)).save(root / str(label) / f"{index:03d}.png")
    return root


def record(**decisions) -> dict:
    return {"format": "vtcc-curation", "version": 1, **decisions}


@pytest.fixture(scope="module")
def over(tmp_path_factory) -> dict:
    """An over-clustered run (K = 8 over 4 classes) and the person's curation of it: each cluster
    merged into the class most of its images have, the least certain image moved to its class's
    cluster, the next one set aside, the clusters named."""
    root = tmp_path_factory.mktemp("curated")
    folder = write_quadrants(root / "images")
    base = root / "base"
    trained = train_run(
        compose_train(base, [*FOLDER, f"data.root={folder}", f"num_clusters={OVER}", "trainer.max_epochs=6"])
    )
    data = trained.run.datamodule
    paths, labels = data.image_paths(), data.labels_in_order().numpy()
    assigned = Assigner(base / "checkpoints" / "last.ckpt", device="cpu").assign_tensor(data.arrays.images)
    clusters = assigned.clusters
    groups: dict[int, list[int]] = {}
    for k in np.unique(clusters).tolist():
        groups.setdefault(int(np.bincount(labels[clusters == k]).argmax()), []).append(k)
    home = {label: min(group) for label, group in groups.items()}  # each class's final cluster
    final = {k: min(group) for group in groups.values() for k in group}
    unsure = [int(i) for i in np.argsort(assigned.confidence) if int(labels[i]) in home]
    wrong = [i for i in unsure if final[int(clusters[i])] != home[int(labels[i])]]
    moved = (wrong or unsure)[0]  # the least certain image the merges leave in another class's cluster
    outlier = next(i for i in unsure if i != moved)
    curation = record(
        num_clusters=OVER,
        merges=[group for group in groups.values() if len(group) > 1],
        moves=[{"path": paths[moved], "cluster": home[int(labels[moved])]}],
        outliers=[paths[outlier]],
        names=[{"cluster": k, "name": f"quadrant {label}"} for label, k in home.items()],
    )
    (root / "curation.json").write_text(json.dumps(curation))
    return {
        "root": root,
        "folder": folder,
        "ckpt": base / "checkpoints" / "last.ckpt",
        "file": root / "curation.json",
        "home": home,
        "labels": labels,
        "paths": paths,
        "moved": moved,
        "outlier": outlier,
    }


def curated_run(over: dict, output: Path, *extra: str):
    overrides = [
        *FOLDER,
        f"data.root={over['folder']}",
        f"init_from={over['ckpt']}",
        f"curation={over['file']}",
    ]
    return train_run(compose_train(output, [*CURATED, *overrides, *extra], resolve=False), overrides)


@pytest.fixture(scope="module")
def fine(over, tmp_path_factory):
    """The curated run: 4 epochs of objective=curated from the over-clustered run."""
    return curated_run(over, tmp_path_factory.mktemp("fine") / "run", "trainer.max_epochs=4")


def test_final_clusters_are_the_files_ids_in_increasing_order():
    """Merges keep the smallest id, a split's parts and a move's new cluster are clusters of their
    own; the run's cluster i is the i-th final id (here 0, 1, 3, 5, 6, 9 for K = 6)."""
    curation = curation_from_record(
        record(
            num_clusters=6,
            merges=[[4, 1], [2, 8]],
            splits=[{"cluster": 3, "into": [3, 8], "centroids": [[0.0], [1.0]]}],
            moves=[{"path": "a.png", "cluster": 9}],
        ),
        "c",
    )
    assert curation.final_clusters(6) == [0, 1, 2, 3, 5, 9]
    assert curation.owners(6) == {0: [0], 1: [1, 4], 2: [2, 3], 3: [3], 5: [5]}


def test_a_moved_image_is_certain_an_outlier_has_no_target_and_the_rest_follow_the_threshold():
    curated = Curated(
        clusters=np.array([0, 3, 3, 5, 0]),
        confidence=np.array([0.95, 0.2, 0.99, 0.7, 0.99], dtype=np.float32),
        model_clusters=np.zeros(5, dtype=np.int64),
        outlier=np.array([False, False, False, False, True]),
        names={},
        probabilities=np.zeros((5, 6)),
        embeddings=np.zeros((5, 2)),
        moved=np.array([False, True, False, False, False]),
    )
    targets = curated_targets(curated, [0, 3, 5], threshold=0.9, where="c")
    assert targets.tolist() == [0, 1, 1, NO_TARGET, NO_TARGET]  # moved below 0.9; 0.7 < 0.9; an outlier
    assert curated_targets(curated, [0, 3, 5], threshold=1.0, where="c").tolist() == [-1, 1, -1, -1, -1]
    curated.moved[:] = False
    with pytest.raises(ConfigError, match="no training image is certain.*lower module.threshold"):
        curated_targets(curated, [0, 3, 5], threshold=1.0, where="c")


def test_the_curated_run_has_the_curated_clusters(over, fine):
    """K' clusters, each final cluster's name; its argmax agrees with the targets it trained on,
    the moved image is in its target cluster and the outlier trained nothing."""
    home, curation = over["home"], read_curation(over["file"])
    recorded = last_checkpoint(fine.output_dir)["vtcc_config"]["curated"]
    final = curation.final_clusters(OVER)  # the classes' clusters, and any cluster that held no image
    assert set(home.values()) <= set(final) and len(final) == OVER - sum(len(g) - 1 for g in curation.merges)
    assert fine.run.module.network.num_clusters == len(final) and recorded["clusters"] == final
    assert recorded["sha256"] == curation.sha256 and recorded["source_clusters"] == OVER
    names = {k: f"quadrant {label}" for label, k in home.items()}
    assert recorded["names"] == [names.get(k, "") for k in final]
    targets = last_checkpoint(fine.output_dir)["state_dict"]["targets"]
    assert targets[over["outlier"]] == NO_TARGET
    place = {cluster: i for i, cluster in enumerate(recorded["clusters"])}
    assert targets[over["moved"]] == place[home[int(over["labels"][over["moved"]])]]
    assigner = Assigner(fine.output_dir / "checkpoints" / "last.ckpt", device="cpu")
    clusters = torch.as_tensor(assigner.assign_tensor(fine.run.datamodule.arrays.images).clusters)
    kept = targets != NO_TARGET
    assert kept.float().mean() > 0.25
    assert (clusters[kept] == targets[kept]).float().mean() >= 0.9
    assert clusters[over["moved"]] == targets[over["moved"]]
    assert assigner.cluster_names == {i: name for i, name in enumerate(recorded["names"]) if name}


def test_eval_reproduces_the_curated_runs_metrics_and_a_resume_its_training(over, fine, tmp_path):
    final = json.loads((fine.output_dir / "final_metrics.json").read_text())
    metrics = evaluate_in_process(fine.output_dir / "checkpoints" / "last.ckpt", tmp_path / "eval")
    assert metrics["acc"] == pytest.approx(final["acc"], abs=1e-9)
    assert metrics["nmi"] == pytest.approx(final["nmi"], abs=1e-9)
    curated_run(over, tmp_path / "whole", "trainer.max_epochs=2")
    curated_run(over, tmp_path / "first", "trainer.max_epochs=1")
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    curated_run(over, tmp_path / "second", "trainer.max_epochs=2", f"ckpt_path={first}")
    assert_same_training_state(last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "second"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "fine-tunes the run it was made on: add init_from="),
        (
            ["init_from", "objective=selflabel"],
            "objective=selflabel: with curation= the run trains objective=cur",
        ),
        (["init_from", "module.optimizer.lr=0.1"], "module.optimizer.lr=0.1: with curation= the run trains"),
        (  # its views are taken after Hydra composed: a change of them would be lost, not applied
            ["init_from", "augment.view_a.hflip_p=0.5"],
            "augment.view_a.hflip_p=0.5: with curation= alone the run takes objective=curated's views",
        ),
        (  # a pool the person never saw would be trained toward targets
            ["init_from", "+data.unlabeled_training=instance_phase"],
            "never saw .data.unlabeled_training=instance_phase.: add data.unlabeled_training=joint",
        ),
    ],
)
def test_a_curation_without_its_run_or_with_another_objective_is_refused(over, tmp_path, extra, message):
    """One line each (the command line's overrides say what the person chose), before any work."""
    given = [f"init_from={over['ckpt']}" if item == "init_from" else item for item in extra]
    overrides = [*FOLDER, f"data.root={over['folder']}", f"curation={over['file']}", *given]
    with pytest.raises(ConfigError, match=message):
        train_run(compose_train(tmp_path / "run", overrides, resolve=False), overrides)
    assert not (tmp_path / "run").exists()


def test_a_curation_of_another_k_or_curated_without_a_file_is_refused(over, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps(record(num_clusters=OVER + 1)))
    overrides = [*FOLDER, f"data.root={over['folder']}", f"init_from={over['ckpt']}"]
    cfg = compose_train(tmp_path / "run", [*overrides, f"curation={other}"], resolve=False)
    with pytest.raises(ConfigError, match=f"made on a run with {OVER + 1} clusters and this run has {OVER}"):
        train_run(cfg, [])
    with pytest.raises(ConfigError, match="add curation=<curation.json>"):
        train_run(compose_train(tmp_path / "run", [*overrides, "objective=curated"], resolve=False), [])


def test_data_without_image_indices_is_refused_in_one_line(fine):
    module = fine.run.module
    images = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="this data gives no image indices"):
        module.batch_losses(TrainingPair(images, images))
    terms = module.batch_losses(TrainingPair(images, images, index=torch.tensor([0, 1])))
    assert terms["loss"].ndim == 0 and terms["head_losses"].shape == (1,)


def test_predict_without_the_file_gives_the_curated_clusters_and_their_names(over, fine, predict_in_process):
    cwd = over["root"]
    ckpt = fine.output_dir / "checkpoints" / "last.ckpt"
    code, err = predict_in_process(cwd, f"ckpt_path={ckpt}", f"input={over['folder']}", "output=predicted")
    assert code == 0, err
    rows = (cwd / "predicted" / "clusters.csv").read_text().splitlines()
    assert rows[0].startswith("path,cluster,confidence") and "name" in rows[0].split(",")
    _, module = restore_run(ckpt)
    assert module.network.num_clusters == len(read_curation(over["file"]).final_clusters(OVER))


def test_a_run_on_features_trains_with_a_curation_through_its_cached_features(tmp_path):
    """data=features: the source network reads the file's vectors, the curated heads train on the
    cached evaluation features with their indices (4 separable blobs clustered into 8, merged)."""
    rng = np.random.default_rng(0)
    labels = np.arange(240) % CLASSES
    features = (10 * np.eye(CLASSES, 16)[labels] + rng.standard_normal((240, 16))).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", features=features, y=labels)
    run = ["data=features", f"data.root={tmp_path / 'blobs.npz'}", "trainer.accelerator=cpu", "report=false"]
    source = tmp_path / "source" / "checkpoints" / "last.ckpt"
    short = ["trainer.max_epochs=10"]
    trained = [*run, *short, f"num_clusters={OVER}", "objective=scan"]
    train_run(compose_train(tmp_path / "source", trained, tiny=False, resolve=False))
    clusters = Assigner(source).assign_features(features).clusters
    groups: dict[int, list[int]] = {}
    for k in np.unique(clusters).tolist():
        groups.setdefault(int(np.bincount(labels[clusters == k]).argmax()), []).append(k)
    (tmp_path / "c.json").write_text(json.dumps(record(merges=[g for g in groups.values() if len(g) > 1])))
    given = [*run, *short, f"init_from={source}", f"curation={tmp_path / 'c.json'}"]
    fine = train_run(compose_train(tmp_path / "fine", given, tiny=False, resolve=False), given)
    targets = fine.run.module.targets
    assert fine.run.module.network.num_clusters == OVER - sum(len(g) - 1 for g in groups.values())
    assigned = Assigner(fine.output_dir / "checkpoints" / "last.ckpt").assign_features(features).clusters
    kept = targets != NO_TARGET
    assert kept.float().mean() > 0.9 and (torch.as_tensor(assigned)[kept] == targets[kept]).all()
    assert fine.metrics["acc"] == 1.0  # the blobs, one cluster each
