"""Runs documentation code blocks in order in one namespace, as a reader pasting them into one
Python session would: ``python doc_runner.py BLOCKS.json``. Each block is compiled under its
Markdown file's name and line, so a traceback points into the documentation."""

from __future__ import annotations

import json
import sys
import traceback


def main(blocks_file: str) -> int:
    with open(blocks_file, encoding="utf-8") as f:
        blocks = json.load(f)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks:
        code = "\n" * block["line"] + block["code"]  # line numbers of the Markdown file
        try:
            exec(compile(code, block["file"], "exec"), namespace)
        except SystemExit as stop:
            if stop.code not in (0, None):
                print(f"{block['where']}: exited with {stop.code!r}", file=sys.stderr)
                return 1
        except BaseException:
            print(f"{block['where']}: the block raised", file=sys.stderr)
            traceback.print_exc()
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
