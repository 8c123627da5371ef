"""Loaders for the labelled cell collections and subject-disjoint splits.

Every loader returns ``Sample`` records; ``label`` is 1 for a blast and 0 for
any other cell. Where a collection has subject ids (C-NMC 2019), a split
never puts one subject's cells on both sides: cells of one patient are far
more alike than cells of different patients, so a mixed split measures
memory, not generalisation.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from device.resources import find_shared_data  # noqa: F401  (where the labelled data is)

BLAST, NORMAL = 1, 0
LABEL_NAMES = ("normal", "blast")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 blast, 0 normal
    source: str  # collection name, for per-source metrics
    subject: str | None  # patient/donor id where the collection has one
    cell_type: str  # finer label where known (lymphocyte, blast, ...)
    group: str  # split unit: subject, or the file (with known duplicates merged)
    # Where the cell is, for cells cut from whole frames (model_conversion/sources.py):
    centre: tuple[float, float] | None = None  # (x, y) in the file's pixels; None = the image centre
    cell_side: float | None = None  # side of the cell's bounding box in pixels, where known
    rbc_radius: float | None = None  # red-cell radius in the file's pixels (the physical scale)
    mask: Path | None = None  # expert mask (nucleus white, cytoplasm grey), where the collection has one


def _read_labels(folder: Path) -> list[dict[str, str]]:
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: labels.csv not found")
    with labels.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ALL-IDB2 Im223_0 and Im257_0 are the same picture: keep them on one side.
_ALL_IDB2_DUPLICATES = {"Im257_0.tif": "Im223_0.tif"}


def load_all_idb2(folder: Path) -> list[Sample]:
    samples = []
    for row in _read_labels(folder):
        name = row["file"]
        label = BLAST if row["label"] == "blast" else NORMAL
        group = "all-idb2:" + _ALL_IDB2_DUPLICATES.get(name, name)
        samples.append(Sample(folder / name, label, "all-idb2", None, row["label"], group))
    return samples


def load_cnmc(folder: Path) -> list[Sample]:
    samples = []
    for row in _read_labels(folder):
        label = BLAST if row["label"] == "blast" else NORMAL
        subject = row["subject_id"]
        samples.append(Sample(folder / row["file"], label, "c-nmc-2019", subject, row["label"],
                              f"c-nmc:{subject}"))
    return samples


def load_pbc(folder: Path) -> list[Sample]:
    """PBC normal cells: every type (lymphocytes, neutrophils, platelets, ...) is a non-blast."""
    return [Sample(folder / row["file"], NORMAL, "pbc-normal", None, row["label"], f"pbc:{row['file']}")
            for row in _read_labels(folder)]


def load_folder_per_class(folder: Path, blast_classes: tuple[str, ...] = ("blast", "all")) -> list[Sample]:
    """A user's own data: ``folder/<class>/*.png|jpg|tif...``; classes named in blast_classes are blasts.

    A ``folder/<subject>/<class>/`` layout is also understood: the subject
    becomes the split group.
    """
    from device.core.imageio import SUPPORTED_SUFFIXES

    samples = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        parts = path.relative_to(folder).parts
        cls = parts[-2] if len(parts) >= 2 else "unknown"
        subject = parts[-3] if len(parts) >= 3 else None
        label = BLAST if cls.lower() in blast_classes else NORMAL
        group = f"{folder.name}:{subject}" if subject else f"{folder.name}:{path.name}"
        samples.append(Sample(path, label, folder.name, subject, cls, group))
    return samples


def load_shared_data(root: Path) -> list[Sample]:
    """ALL-IDB2 + C-NMC 2019 + PBC from the shared data layout (see its README)."""
    return load_all_idb2(root / "all-idb2") + load_cnmc(root / "c-nmc-2019") + load_pbc(root / "pbc-normal")


def split_by_group(samples: list[Sample], val_fraction: float = 0.2, seed: int = 2025
                   ) -> tuple[list[Sample], list[Sample]]:
    """Split so that no group (subject, or single file) is on both sides.

    Subjects are drawn per (source, label) so the validation side holds
    patients AND donors of every subject-bearing source; file-level groups
    are drawn stratified by (source, label).
    """
    rng = random.Random(seed)
    by_stratum: dict[tuple[str, int, bool], dict[str, int]] = {}
    for sample in samples:
        key = (sample.source, sample.label, sample.subject is not None)
        sizes = by_stratum.setdefault(key, {})
        sizes[sample.group] = sizes.get(sample.group, 0) + 1
    val_groups: set[str] = set()
    for key in sorted(by_stratum):
        sizes = by_stratum[key]
        groups = sorted(sizes)
        rng.shuffle(groups)
        if len(groups) < 2:
            continue
        # Take whole groups until the validation side holds about
        # val_fraction of the stratum's cells; always one, never all.
        target, taken, chosen = val_fraction * sum(sizes.values()), 0, []
        for group in groups:
            if len(chosen) == len(groups) - 1 or taken >= 0.8 * target:
                break
            if taken + sizes[group] <= 1.5 * target:
                chosen.append(group)
                taken += sizes[group]
        if not chosen:
            chosen = [min(groups, key=lambda g: (sizes[g], g))]
        val_groups.update(chosen)
    train = [s for s in samples if s.group not in val_groups]
    val = [s for s in samples if s.group in val_groups]
    return train, val
