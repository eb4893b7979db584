"""Print the longest functions in src/ (lines from ``def`` to the end, docstring excluded)."""

from __future__ import annotations

import ast
import pathlib
import sys


def lengths(root: pathlib.Path) -> list[tuple[int, str]]:
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                doc = node.body[0]
                if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
                    size -= doc.end_lineno - doc.lineno + 1  # type: ignore[operator]
                rows.append((size, f"{path}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


if __name__ == "__main__":
    for size, where in lengths(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src"))[:10]:
        print(f"{size:4} {where}")
