"""``torchserve-perf metrics``: the shipped metrics YAML, and merging it into a deployment's own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from torchserve_perf.plugins.metrics import declarations
from torchserve_perf.tools.argparsing import command_parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("metrics", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("path", help="print the path of the shipped metrics.yaml")
    merge = commands.add_parser("merge", help="declare our metrics in an existing metrics YAML")
    merge.add_argument("source", type=Path, help="the metrics YAML your TorchServe uses now")
    merge.add_argument("-o", "--output", type=Path, help="where to write the result (default: stdout)")
    check = commands.add_parser("check", help="say what a metrics YAML lacks for our metrics")
    check.add_argument("source", type=Path)
    args = parser.parse_args(argv)

    if args.command == "path":
        print(declarations.SHIPPED)
        return 0
    document = declarations.read(args.source)
    if args.command == "merge":
        text = declarations.dump(declarations.merge(document))
        if args.output:
            args.output.write_text(text)
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    issues = declarations.problems(document)
    for issue in issues:
        print(issue)
    print(f"{args.source}: {'OK' if not issues else f'{len(issues)} problem(s)'}", file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
