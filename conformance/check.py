"""Fail on any FAILED Autobahn case that the allow-list does not explain.

python -m conformance.check REPORT_DIR AGENT [AGENT ...]
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

ALLOWLIST = Path(__file__).with_name("allowlist.txt")


def allowed() -> dict[str, str]:
    """``case id -> reason`` from allowlist.txt (``AGENT CASE  reason``; '#' comments)."""
    entries = {}
    for line in ALLOWLIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            agent, case, reason = line.split(None, 2)
            entries[f"{agent} {case}"] = reason
    return entries


def main(report_dir: str, agents: list[str]) -> int:
    index = json.loads((Path(report_dir) / "index.json").read_text())
    allow = allowed()
    status = 0
    for agent in agents:
        if agent not in index:
            print(f"{agent}: no results in the report")
            status = 1
            continue
        cases = index[agent]
        counts = collections.Counter(result["behavior"] for result in cases.values())
        closes = collections.Counter(result["behaviorClose"] for result in cases.values())
        print(
            f"{agent}: {len(cases)} cases: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
        print(
            f"{agent}: closing behaviour: "
            + ", ".join(f"{k} {v}" for k, v in sorted(closes.items()))
        )
        for case, result in sorted(cases.items()):
            if "FAILED" in (result["behavior"], result["behaviorClose"]):
                reason = allow.get(f"{agent} {case}") or allow.get(f"* {case}")
                if reason:
                    print(f"  allowed {case}: {reason}")
                else:
                    print(f"  FAILED {case} (not in conformance/allowlist.txt)")
                    status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
