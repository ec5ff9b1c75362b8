"""Your own images: a folder of labelled photos as the pipeline's data (prepare.source: images).

One sub-folder per class (`cat/`, `dog/`, ...), or `train/` and `test/` each holding them. Every
file goes through the bounded decoder (cifar.decode.read_image); class names are the folder
names, sorted. Unreadable files are listed and left out; what would make a bad data set stops
with a FolderError naming what to fix; byte-identical files across train/test or classes warn."""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cifar.outputs import StageError

# A class name: what metadata.json, the tables and the demo page show. Letters (any script),
# digits, spaces, dots, dashes, underscores and pluses; no leading dot, space or punctuation.
LABEL = re.compile(r"[^\W_][\w .+-]{0,63}")


class FolderError(StageError, ValueError):
    """The image folder cannot make a data set: what is wrong, where, and what to do."""


def class_folders(root):
    """{class: folder} of `root`'s sub-folders, sorted; hidden ones are not classes."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    bad = [p.name for p in folders if not LABEL.fullmatch(p.name)]
    if bad:
        raise FolderError(f"{root}: folder names that are not valid class names: {', '.join(map(repr, bad))}. A "
                          "class name starts with a letter or digit and holds letters, digits, spaces, '.', '-', "
                          "'_' or '+' (64 at most): rename them")
    return {p.name: p for p in folders}


def layout(root):
    """({split: {class: folder}}, has its own test split): train/ and test/, or class folders ("all")."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"prepare.images = {str(root)!r} is not a folder: give the folder of your images, one "
                          "sub-folder per class (docs/pipeline.md, 'Your own images')")
    top = class_folders(root)
    if set(top) == {"train", "test"}:
        splits = {split: class_folders(top[split]) for split in ("train", "test")}
        if set(splits["train"]) != set(splits["test"]):
            only = sorted(set(splits["train"]) ^ set(splits["test"]))
            raise FolderError(f"{root}: train/ and test/ must hold the same class folders; only one of them has "
                              f"{', '.join(only)}")
        return splits, True
    if "train" in top or "test" in top:
        raise FolderError(f"{root}: a train/ or test/ folder beside class folders; give either train/ and test/ "
                          "(each with one folder per class) or class folders only")
    return {"all": top}, False


def files_of(folder):
    """Every regular, non-hidden file under a class folder, sorted."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_files(paths, side, max_pixels=None):
    """(uint8 images, sha256 of each readable file, {path: why} of the unreadable), decoded in threads."""
    from cifar.decode import ImageError, read_image

    def one(path):
        try:
            pixels, _ = read_image(path, max_pixels, side)
        except ImageError as err:
            return None, None, str(err)
        return pixels, hashlib.sha256(Path(path).read_bytes()).hexdigest(), None

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(one, paths))
    kept = [(pixels, digest) for pixels, digest, _ in results if pixels is not None]
    failed = {str(path): why for path, (_, _, why) in zip(paths, results) if why is not None}
    images = np.stack([p for p, _ in kept]) if kept else np.zeros((0, side, side, 3), np.uint8)
    return images, [d for _, d in kept], failed


def check_unreadable(failed, totals, max_share):
    """FolderError if more than `max_share` of a class folder's files are unreadable (or all)."""
    by_folder = Counter(str(Path(path).parent) for path in failed)
    over = [f"{folder}: {count} of {totals[folder]}" for folder, count in sorted(by_folder.items())
            if count == totals[folder] or count / totals[folder] > max_share]
    if over:
        raise FolderError(f"too many unreadable files (more than prepare.max_unreadable = {max_share:.0%} of a "
                          f"class): {'; '.join(over)}. The unreadable files are listed above; fix or remove them")


def memory_needed(images, side):
    """Bytes of `images` prepared images (uint8, side x side x 3)."""
    return images * side * side * 3


def available_memory():
    """Bytes of memory available now (Linux' MemAvailable), or None where it is not known."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")), None)


# A stage holds a few copies of the prepared arrays while it works (prepare: the decoded images,
# their stack and the splits; training: the arrays and the input pipeline's batches).
MEMORY_COPIES = 4


def check_memory(root, files, side, available=None):
    """Stop before reading if MEMORY_COPIES x the prepared size exceeds the memory available."""
    available = available_memory() if available is None else available
    needed = memory_needed(files, side)
    if available is not None and needed * MEMORY_COPIES > available:
        smaller = [s for s in (128, 64, 32) if s < side and memory_needed(files, s) * MEMORY_COPIES <= available]
        fix = f"set prepare.side to {smaller[0]} ({memory_needed(files, smaller[0]) / 1e9:.2f} GB)" if smaller else \
            "use fewer images"
        raise FolderError(f"{root}: {files:,} images at {side} px take {needed / 1e9:.2f} GB as prepared "
                          f"({side}x{side}x3 bytes each), and a stage holds about {MEMORY_COPIES} copies while it "
                          f"works: more than the {available / 1e9:.2f} GB of memory available here. {fix[0].upper()}"
                          f"{fix[1:]}, or run on a machine with more memory")


def read_folder(root, side, max_unreadable, max_pixels=None, warn=print, available=None):
    """({split: (images, labels, digests, paths)}, class names, report: files, unreadable {path: why},
    and the folder's sha256 over every readable file's relative path and content digest)."""
    root = Path(root)
    splits, own_test = layout(root)
    names = sorted(next(iter(splits.values())))
    if len(names) < 2:
        found = f"one class folder ({names[0]})" if names else "no class folders"
        raise FolderError(f"{root}: {found}; a classifier needs at least two classes, one sub-folder each")
    check_memory(root, sum(len(files_of(folders[name])) for folders in splits.values() for name in names), side,
                 available)
    out, failed, totals, listing = {}, {}, {}, hashlib.sha256()
    for split, folders in splits.items():
        paths, labels = [], []
        for label, name in enumerate(names):
            found = files_of(folders[name])
            if not found:
                raise FolderError(f"{folders[name]}: no files; every class needs images (remove the folder to drop "
                                  "the class)")
            totals[str(folders[name])] = len(found)
            paths += found
            labels += [label] * len(found)
        images, digests, bad = read_files(paths, side, max_pixels)
        for path, why in bad.items():
            warn(f"prepare: warning: {path}: left out: {why}")
        failed.update(bad)
        keep = [i for i, p in enumerate(paths) if str(p) not in bad]
        kept_paths = [paths[i] for i in keep]
        for path, digest in zip(kept_paths, digests):
            listing.update(f"{path.relative_to(root).as_posix()}\0{digest}\n".encode())
        out[split] = (images, np.asarray([labels[i] for i in keep], np.uint8), digests, kept_paths)
    check_unreadable(failed, totals, max_unreadable)
    if failed:
        warn(f"prepare: {len(failed)} of {sum(totals.values())} files left out as unreadable (listed above)")
    return out, names, {"files": sum(totals.values()), "unreadable": failed, "sha256": listing.hexdigest(),
                        "own_test_split": own_test}


def check_counts(labels, names, test_fraction, val_fraction, where):
    """FolderError naming each class too small to keep one test, one val and one training image."""
    counts = Counter(labels.tolist())
    need = 1
    while True:  # the fewest images whose stratified shares are each at least one
        test = math.floor(need * test_fraction) if test_fraction else 0
        val = math.floor((need - test) * val_fraction)
        if (test >= 1 or not test_fraction) and val >= 1 and need - test - val >= 1:
            break
        need += 1
    short = [f"{names[i]} ({counts.get(i, 0)})" for i in range(len(names)) if counts.get(i, 0) < need]
    if short:
        raise FolderError(f"{where}: too few readable images for the split in: {', '.join(short)}; each class needs "
                          f"at least {need} (prepare.test_fraction {test_fraction}, prepare.val_fraction "
                          f"{val_fraction}): add images, or remove the class folder")


def duplicates(pool, test, root):
    """Warnings for byte-identical files: a test image among the training ones, an image in two classes."""
    groups = defaultdict(list)  # digest: [(path, label, is a test image)]
    for is_test, (digests, paths, labels) in ((False, pool), (True, test)):
        for digest, path, label in zip(digests, paths, labels.tolist()):
            groups[digest].append((path.relative_to(root), label, is_test))
    lines = []
    for group in groups.values():
        trained = [str(path) for path, _, is_test in group if not is_test]
        lines += [f"prepare: warning: the same image in training and test data: {path} = {', '.join(trained)}"
                  for path, _, is_test in group if is_test and trained]
        if len({label for _, label, _ in group}) > 1:
            lines.append("prepare: warning: the same image under two classes: "
                         + " = ".join(str(path) for path, _, _ in group))
    return lines


def stratified_split(labels, fraction, seed):
    """(kept indices, held-out indices): a stratified split of `labels` holding out `fraction`,
    with the seed (scikit-learn's train_test_split)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)


def prepare(root, side, test_fraction, val_fraction, max_unreadable, seed, max_pixels=None, warn=print):
    """The folder as prepare's arrays, class names and report. Without its own test/, `test_fraction`
    of each class is held out as test, then `val_fraction` of the rest as val, stratified, seeded."""
    root = Path(root)
    found, names, report = read_folder(root, side, max_unreadable, max_pixels, warn)
    if report["own_test_split"]:
        (x_pool, y_pool, d_pool, p_pool), (x_test, y_test, d_test, p_test) = found["train"], found["test"]
        check_counts(y_pool, names, 0, val_fraction, root / "train")
        missing = [names[i] for i in range(len(names)) if not (y_test == i).any()]
        if missing:
            raise FolderError(f"{root / 'test'}: no readable test images for {', '.join(missing)}")
    else:
        x, y, digests, paths = found["all"]
        check_counts(y, names, test_fraction, val_fraction, root)
        keep, held = stratified_split(y, test_fraction, seed)
        x_pool, y_pool, x_test, y_test = x[keep], y[keep], x[held], y[held]
        d_pool, p_pool = [digests[i] for i in keep], [paths[i] for i in keep]
        d_test, p_test = [digests[i] for i in held], [paths[i] for i in held]
    for line in duplicates((d_pool, p_pool, y_pool), (d_test, p_test, y_test), root):
        warn(line)
    train, val = stratified_split(y_pool, val_fraction, seed)
    arrays = {"x_train": x_pool[train], "y_train": y_pool[train], "x_val": x_pool[val], "y_val": y_pool[val],
              "x_test": x_test, "y_test": y_test}
    return arrays, names, report
