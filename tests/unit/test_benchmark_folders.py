"""The benchmark folders that only check the own-folder rules (scripts/folders.py): written in the
layout a user has, one folder a class, and the mirror and inversion tests reading them as their kind is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vtcc.config.data_defaults import INVERT_TOLERATED, MIRROR_TOLERATED
from vtcc.data.probe import probe_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folders():
    spec = importlib.util.spec_from_file_location("benchmark_folders", ROOT / "scripts" / "folders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["objects28", "textures28", "icons28"])
def test_each_new_kind_is_ten_classes_of_28_px_gray_images_that_differ(folders, tmp_path, name):
    folders.FOLDERS[name](tmp_path, per_class=4)
    classes = sorted(p for p in tmp_path.iterdir())
    assert len(classes) == 10
    means = []
    for folder in classes:
        images = [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]
        assert len(images) == 4 and all(i.shape == (28, 28) and i.dtype == np.uint8 for i in images)
        assert all(i.std() > 5 for i in images)  # something drawn, not a blank square
        assert not np.array_equal(images[0], images[1])  # each image drawn at random
        means.append(np.mean(images, axis=0))
    assert len({m.tobytes() for m in means}) == 10


def test_solids_in_random_poses_hold_their_mirror_images_so_flips_are_on(folders, tmp_path):
    """Every one of the ten solids has a mirror plane, so the mirror image of a view of it is a view
    of it in another pose: with poses drawn uniformly, the mirror images are as much at home in
    the folder as the images (ratio near 1), and augment=auto flips."""
    folders.write_objects28(tmp_path, per_class=20)
    ratio = probe_folder(tmp_path).mirror_ratio
    assert ratio is not None and ratio <= MIRROR_TOLERATED


def test_pictograms_drawn_either_way_round_hold_their_inverted_images_so_inversion_is_on(folders, tmp_path):
    """Each icon is drawn dark on light or light on dark with probability one half each, so the
    folder's distribution is unchanged by inverting gray levels: inverted images are as much at home
    in it as the images (ratio near 1), and augment=auto inverts. Flips do not enter this test."""
    folders.write_icons28(tmp_path, per_class=13)  # 130 images: the probe needs 128
    ratio = probe_folder(tmp_path).invert_ratio
    assert ratio is not None and ratio <= INVERT_TOLERATED


def test_solids_lit_from_one_side_keep_their_gray_levels(folders, tmp_path):
    """The other side of the inversion test on a folder that needs no flips to tell: the solids
    are lit, bright where the light falls and dark in shadow, on a mid-gray ground; inverted, a
    lit side turns dark and the shadow bright, which no view of a solid shows, so augment=auto
    keeps their gray levels (measured on the benchmark's 256-image sample: 3.04)."""
    folders.write_objects28(tmp_path, per_class=13)  # 130 images: the probe needs 128
    ratio = probe_folder(tmp_path).invert_ratio
    assert ratio is not None and ratio > INVERT_TOLERATED
