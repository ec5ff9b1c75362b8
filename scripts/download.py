"""Stage `download`: fetch the CIFAR-10 archive, verify its sha256, place it in data/raw.

Usage: python scripts/download.py --out data/raw/cifar-10-python.tar.gz

Reads params `download.url` and `download.sha256` (the official archive). For an offline
copy, set CIFAR10_ARCHIVE to its path and CIFAR10_SHA256 to the sha256 you trust (or keep a
`SHA256SUMS` file listing it beside the copy). Either way the archive is verified before it is
written, and its content hash ends up in dvc.lock as this stage's output.
"""

import argparse
from pathlib import Path

from cifar import data, outputs, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["download"])["download"]

    sha256, _ = data.trusted_sha256(cfg["sha256"])
    offline = data.offline_copy()
    if offline:
        print(f"Copying offline archive {offline} (sha256 {sha256})")
        data.copy_verified(offline, sha256, args.out)
    else:
        print(f"Downloading {cfg['url']} (sha256 {sha256})")
        data.fetch(cfg["url"], sha256, args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    outputs.run_stage("download", main)
