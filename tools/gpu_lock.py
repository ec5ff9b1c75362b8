"""Write requirements-gpu.lock: requirements-gpu.txt resolved by pip under requirements.lock.

Usage: python tools/gpu_lock.py --report build/gpu-report.json --out requirements-gpu.lock

`--report` is pip's installation report of a dry run (`pip install --dry-run --ignore-installed
--report FILE -r requirements-gpu.txt -c requirements.lock`; `make lock-gpu` runs both). Every
package the CPU lock pins keeps its version, so the GPU set-up differs only by the NVIDIA wheels;
a package pip chose differently is an error.
"""

import argparse
import json
import sys
from pathlib import Path


def key(name):
    return name.lower().replace("_", "-")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--cpu-lock", default=Path("requirements.lock"), type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    cpu = {key(line.split("==")[0]): line.strip() for line in args.cpu_lock.read_text().splitlines() if "==" in line}
    resolved = {key(i["metadata"]["name"]): f"{i['metadata']['name']}=={i['metadata']['version']}"
                for i in json.loads(args.report.read_text())["install"]}
    # pip's own tools, which --ignore-installed lists; the CPU lock does not pin them either.
    resolved = {k: v for k, v in resolved.items() if k not in ("pip", "setuptools", "wheel")}
    changed = sorted(k for k in cpu if k in resolved and key(resolved[k]) != key(cpu[k]))
    missing = sorted(set(cpu) - set(resolved))
    if changed or missing:
        sys.exit(f"gpu_lock: error: the GPU resolution differs from {args.cpu_lock} "
                 f"(other versions: {', '.join(changed) or 'none'}; missing: {', '.join(missing) or 'none'})")
    args.out.write_text("".join(f"{line}\n" for _, line in sorted(resolved.items())))
    print(f"wrote {args.out}: {len(cpu)} packages as in {args.cpu_lock}, {len(resolved) - len(cpu)} more: "
          + ", ".join(resolved[k] for k in sorted(set(resolved) - set(cpu))))


if __name__ == "__main__":
    main()
