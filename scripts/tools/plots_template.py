"""Write an HTML template for `dvc plots show/diff` that works offline.

Usage: python scripts/tools/plots_template.py --out build/plots_template.html
       dvc plots show --html-template build/plots_template.html -o reports/plots

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so it stays blank without
internet. This template inlines the three libraries from node_modules (installed by
`make setup` from package.json) and keeps DVC's {plot_divs} placeholder.
"""

import argparse
import sys
from pathlib import Path

LIBRARIES = [
    "node_modules/vega/build/vega.min.js",
    "node_modules/vega-lite/build/vega-lite.min.js",
    "node_modules/vega-embed/build/vega-embed.min.js",
]

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>CIFAR-10 pipeline plots</title>
{scripts}
<style>body {{ font-family: sans-serif; }} table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    missing = [lib for lib in LIBRARIES if not Path(lib).is_file()]
    if missing:
        sys.exit(f"plots_template: error: {missing[0]} not found; run `make setup` (npm ci) first")
    # "</script" inside a library would end the inline element early.
    sources = [Path(lib).read_text(encoding="utf8").replace("</script", "<\\/script") for lib in LIBRARIES]
    scripts = "\n".join(f"<script>\n{source}\n</script>" for source in sources)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(PAGE.format(scripts=scripts), encoding="utf8")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
