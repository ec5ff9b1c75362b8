"""Stage `download`: fetch the CIFAR-10 archive, verify its sha256, place it in data/raw.

Usage: python scripts/download.py --out data/raw/cifar-10-python.tar.gz

Reads params `download.url` and `download.sha256` (the official archive). For an offline
copy, set CIFAR10_ARCHIVE to its path and CIFAR10_SHA256 to the sha256 you trust (or keep a
`SHA256SUMS` file listing it beside the copy). Either way the archive is verified before it is
written, and its content hash ends up in dvc.lock as this stage's output.
"""

import argparse
import os
import sys
from pathlib import Path

from cifar import data, params


def offline_source():
    """(path, sha256) of an offline copy named by the environment, or None."""
    archive = os.environ.get("CIFAR10_ARCHIVE")
    if not archive:
        return None
    sha256 = os.environ.get("CIFAR10_SHA256")
    sums = Path(archive).with_name("SHA256SUMS")
    if not sha256 and sums.is_file():
        sha256 = data.read_sha256_file(sums, Path(archive).name)
    if not sha256:
        raise data.ArchiveError(
            f"CIFAR10_ARCHIVE={archive} is set but no sha256 was given: set CIFAR10_SHA256 "
            f"to the archive's sha256, or put a SHA256SUMS file listing it beside the archive"
        )
    return archive, sha256


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    cfg = params.load(["download"])["download"]

    offline = offline_source()
    if offline:
        archive, sha256 = offline
        print(f"Copying offline archive {archive} (sha256 {sha256})")
        data.copy_verified(archive, sha256, args.out)
    else:
        print(f"Downloading {cfg['url']} (sha256 {cfg['sha256']})")
        data.fetch(cfg["url"], cfg["sha256"], args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (params.ParamsError, data.ArchiveError) as err:
        sys.exit(f"download: error: {err}")
