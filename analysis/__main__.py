"""``python -m analysis report RESULTS_DIR... --out DIR [--baseline VARIANT]``.

See ``analysis.report``; ``switchkd report`` is the same command.
"""

import sys

from analysis.report import report_main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "report":
        print("usage: python -m analysis report RESULTS_DIR... --out DIR [--baseline VARIANT]",
              file=sys.stderr)
        return 2
    return report_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
