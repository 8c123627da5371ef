"""Data loaders and the subject-disjoint split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from model_conversion.data import (
    BLAST,
    NORMAL,
    Sample,
    load_cnmc,
    load_folder_per_class,
    load_shared_data,
    split_by_group,
)
from model_conversion.train import source_balanced_weights


def test_real_split_is_subject_disjoint_and_holds_both_classes(shared_data):
    samples = load_shared_data(shared_data)
    assert {s.source for s in samples} == {"all-idb2", "c-nmc-2019", "pbc-normal"}
    train, val = split_by_group(samples, 0.2, seed=2025)
    assert len(train) + len(val) == len(samples)
    train_subjects = {s.subject for s in train if s.subject}
    val_subjects = {s.subject for s in val if s.subject}
    assert train_subjects and val_subjects and not (train_subjects & val_subjects)
    # Held-out side has ALL patients and a healthy donor of C-NMC.
    assert any(s.startswith("H") for s in val_subjects)
    assert any(not s.startswith("H") for s in val_subjects)
    assert {s.label for s in val if s.source == "c-nmc-2019"} == {BLAST, NORMAL}
    # No file on both sides, and the known ALL-IDB2 duplicate pair stays together.
    assert not ({s.path for s in train} & {s.path for s in val})
    dup_sides = {("Im223_0.tif" in s.path.name or "Im257_0.tif" in s.path.name, side)
                 for side, part in (("train", train), ("val", val)) for s in part}
    assert len({side for is_dup, side in dup_sides if is_dup}) == 1
    assert 0.12 < len(val) / len(samples) < 0.35


def test_cnmc_labels_and_subjects(shared_data):
    cells = load_cnmc(shared_data / "c-nmc-2019")
    assert len(cells) == 2626
    assert all(s.subject.startswith("H") == (s.label == NORMAL) for s in cells)


def test_split_is_deterministic(shared_data):
    samples = load_shared_data(shared_data)
    a = split_by_group(samples, 0.2, seed=1)[1]
    b = split_by_group(samples, 0.2, seed=1)[1]
    c = split_by_group(samples, 0.2, seed=2)[1]
    assert [s.path for s in a] == [s.path for s in b]
    assert [s.path for s in a] != [s.path for s in c]


def test_folder_per_class_layout_with_subjects(tmp_path: Path):
    for subject in ("p1", "p2", "p3"):
        for cls in ("blast", "lymphocyte"):
            folder = tmp_path / "mine" / subject / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((16, 16, 3), 100 + i, np.uint8)).save(folder / f"c{i}.png")
    (tmp_path / "mine" / "p1" / "blast" / "notes.txt").write_text("not an image")
    samples = load_folder_per_class(tmp_path / "mine")
    assert len(samples) == 18
    assert sum(s.label == BLAST for s in samples) == 9
    train, val = split_by_group(samples, 0.34, seed=0)
    assert not ({s.subject for s in train} & {s.subject for s in val})


def test_source_balanced_weights_make_the_source_no_cue():
    def sample(source, label, n):
        return [Sample(Path(f"{source}{label}{i}"), label, source, None, "", f"{source}{i}") for i in range(n)]
    samples = sample("a", BLAST, 30) + sample("a", NORMAL, 10) + sample("b", NORMAL, 20)
    w = source_balanced_weights(samples, single_class_weight=0.5)
    a_blast, a_normal, b = w[:30].sum(), w[30:40].sum(), w[40:]
    assert abs(a_blast - a_normal) < 1e-4  # within source a, both classes weigh the same
    assert abs(w.mean() - 1.0) < 1e-6
    assert np.allclose(b, b[0]) and b[0] < w[30]  # single-class source down-weighted
