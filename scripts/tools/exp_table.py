"""Print the metrics that matter of a DVC experiment, narrow enough for any terminal.

Usage: python scripts/tools/exp_table.py [--exp NAME]

`dvc exp show` prints every param and metric as a column; on a normal terminal that is a row of
"…". This prints, for the newest experiment of the current commit (or --exp NAME), each model's
test accuracy beside the commit's own (the reference run on main), and the export targets: the
float formats' agreement with Keras, int8's size against float32 and its accuracy drop.
"""

import argparse
import json
import re
import subprocess
import sys

EVALUATE = "reports/metrics/evaluate/{}.json"  # each model's, from evaluate@NAME
EXPORT = "reports/metrics/export/{}.json"


def metrics(rev):
    """{metrics file: its data} of one entry of `dvc exp show --json`."""
    return {path: (entry or {}).get("data") or {} for path, entry in ((rev.get("data") or {}).get("metrics") or {}).items()}


def pick(commits, name):
    """(experiment rev, baseline rev) for `name`, else the newest experiment of the first commit."""
    baseline = next((c for c in commits if c.get("rev") != "workspace"), None)
    if baseline is None:
        return None, None
    found = []
    for exp in baseline.get("experiments") or []:
        for rev in exp.get("revs") or []:
            if name is None or name in (rev.get("name"), exp.get("name"), rev.get("rev")):
                found.append(rev)
    found.sort(key=lambda r: (r.get("data") or {}).get("timestamp") or "")
    return (found[-1] if found else None), baseline


def percent(value):
    return f"{value * 100:.2f}%" if isinstance(value, (int, float)) else "-"


def verdict(value, met, fmt):
    if value is None:
        return "-"
    return f"{fmt(value)} {'met' if met else 'MISSED'}"


def table(exp, baseline):
    ours, ref = metrics(exp), metrics(baseline)
    names = [path.split("/")[-1][:-len(".json")] for path in ours if re.fullmatch(EVALUATE.format(r"\w+"), path)]
    evaluation = {name: ours[EVALUATE.format(name)].get(name, {}) for name in names}
    header = ["model", "test accuracy", "reference", "floats agree", "int8 size", "int8 drop"]
    rows = [header]
    for name in names:
        targets = ours.get(EXPORT.format(name), {}).get("targets", {})
        rows.append([
            name,
            percent(evaluation[name].get("test", {}).get("accuracy")),
            percent(ref.get(EVALUATE.format(name), {}).get(name, {}).get("test", {}).get("accuracy")),
            verdict(targets.get("float_agreement_min"), targets.get("float_agreement_met"), percent),
            verdict(targets.get("int8_size_ratio"), targets.get("int8_size_met"), lambda v: f"{v * 100:.1f}%"),
            verdict(targets.get("int8_accuracy_drop_pp"), targets.get("int8_accuracy_met"), lambda v: f"{v:.2f} pp"),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", help="experiment name (default: the newest of the current commit)")
    args = parser.parse_args(argv)
    shown = subprocess.run(["dvc", "exp", "show", "--json", "--no-pager"], capture_output=True, text=True)
    if shown.returncode != 0:
        sys.exit(f"exp_table: error: `dvc exp show` failed: {shown.stderr.strip()}")
    exp, baseline = pick(json.loads(shown.stdout or "[]"), args.exp)
    if exp is None:
        sys.exit("exp_table: error: no experiment found" + (f" named {args.exp}" if args.exp else
                 " for the current commit; run one first (`make quick`)"))
    when = ((exp.get("data") or {}).get("timestamp") or "").replace("T", " ")
    print(f"Experiment {exp.get('name') or exp.get('rev', '')[:7]} ({when}); "
          f"reference: {(baseline.get('name') or baseline.get('rev', '')[:7])}'s committed metrics")
    print(table(exp, baseline))
    print("All columns: dvc exp show; one experiment against the reference: "
          f"dvc metrics diff {baseline.get('rev', 'HEAD')[:7]} {exp.get('rev', '')[:7]}")


if __name__ == "__main__":
    main()
