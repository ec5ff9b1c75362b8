"""Tiny CIFAR-10 archives in the official "python version" layout, for tests."""

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def batch(n, seed, label_offset=0):
    rng = np.random.default_rng(seed)
    # Images with structure (a gradient per class plus noise), so a model can learn them.
    labels = (np.arange(n) + label_offset) % 10
    base = np.linspace(0, 255, 32 * 32, dtype=np.float32)
    data = np.empty((n, 3072), np.uint8)
    for i, label in enumerate(labels):
        planes = [np.roll(base, 97 * label + 31 * c) for c in range(3)]
        noisy = np.concatenate(planes) + rng.normal(0, 20, 3072)
        data[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return {b"batch_label": b"synthetic", b"labels": labels.tolist(), b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_archive(path, per_batch=40, skip=(), edit=None):
    """Write a synthetic archive; `skip` drops members, `edit(name, batch)` alters a batch."""
    path = Path(path)
    meta = {b"label_names": [n.encode() for n in NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    members = {"batches.meta": meta}
    for i, name in enumerate(BATCHES):
        b = batch(per_batch, seed=i, label_offset=i)
        if edit:
            b = edit(name, b) or b
        members[name] = b
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            if name in skip:
                continue
            payload = pickle.dumps(obj, protocol=4)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
