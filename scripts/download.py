"""Stage `download`: fetch the CIFAR-10 archive, verify its sha256, place it in data/raw.

Usage: python scripts/download.py --out data/raw/cifar-10-python.tar.gz

From `download.url`, checked against `download.sha256`; offline, CIFAR10_ARCHIVE names a copy and
CIFAR10_SHA256 (or a SHA256SUMS beside it) its digest. With `prepare.source: images` there is
nothing to fetch: data/raw/ holds a note saying so."""

import argparse
from pathlib import Path

from cifar import data, outputs, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    loaded = params.load(["download", "prepare"])
    cfg = loaded["download"]
    if loaded["prepare"]["source"] == "images":  # your own images: no archive to fetch
        args.out.parent.mkdir(parents=True, exist_ok=True)
        (args.out.parent / "not-downloaded.txt").write_text(
            f"prepare.source is images: prepare reads {loaded['prepare']['images']}, and CIFAR-10 is not downloaded.\n")
        print(f"prepare.source is images ({loaded['prepare']['images']}): nothing to download")
        return
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
