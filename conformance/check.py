#!/usr/bin/env python3
"""Checks an Autobahn TestSuite report (index.json) for one agent.

Every case must be OK, NON-STRICT or INFORMATIONAL (behavior) with a close behaviour of
OK or INFORMATIONAL, and every case must appear in the committed expected results (so a
case that appears or disappears is noticed; a case that moves between accepted results,
as OK and NON-STRICT do with timing, is printed). An expected entry may carry "known": a
reason (a filed bug) under which its recorded, otherwise unacceptable result is tolerated
while it stays exactly as recorded; a result that got better only prints a notice. Prints
one line per problem and a closing "N passed, N failed" line.

Usage: check.py INDEX_JSON AGENT EXPECTED_JSON [--update]
  --update rewrites EXPECTED_JSON from the report (after a reviewed change).
"""
import json
import sys

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
ACCEPTED_CLOSE = {"OK", "INFORMATIONAL"}


def acceptable(result):
    return result["behavior"] in ACCEPTED and result["behaviorClose"] in ACCEPTED_CLOSE


def case_key(case):
    return [int(part) for part in case.split(".")]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    update = "--update" in sys.argv
    if len(args) != 3:
        print(__doc__)
        return 2
    index_path, agent, expected_path = args
    with open(index_path) as f:
        index = json.load(f)
    if agent not in index:
        print("no results for agent %r in %s (agents: %s)" % (agent, index_path, list(index)))
        print("0 passed, 1 failed")
        return 1
    report = {
        case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
        for case, r in index[agent].items()
    }
    if update:
        try:
            with open(expected_path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {}
        fresh = {}
        for case, result in sorted(report.items(), key=lambda kv: case_key(kv[0])):
            entry = dict(result)
            known = old.get(case, {}).get("known")
            if known and not acceptable(result):
                entry["known"] = known
            fresh[case] = entry
        with open(expected_path, "w") as f:
            json.dump(fresh, f, indent=1)
            f.write("\n")
        print("wrote %s (%d cases)" % (expected_path, len(report)))
    with open(expected_path) as f:
        expected = json.load(f)

    passed, failed, known = 0, 0, {}
    counts = {}
    for case in sorted(set(report) | set(expected), key=case_key):
        got, want = report.get(case), expected.get(case)
        recorded = None if want is None else {k: v for k, v in want.items() if k != "known"}
        problems = []
        if got is None:
            problems.append("missing from the report (expected %s)" % recorded)
        else:
            counts[got["behavior"]] = counts.get(got["behavior"], 0) + 1
            tolerated = want is not None and want.get("known") and got == recorded
            if tolerated:
                known.setdefault(want["known"], []).append(case)
            elif acceptable(got):
                if recorded is None:
                    problems.append("not in the expected results: %s" % got)
                elif recorded != got and acceptable(recorded):
                    # Both are passes. OK and NON-STRICT swap with timing (e.g. 3.4,
                    # 4.2.5: whether the echo of earlier frames left before the bad frame
                    # failed the connection), so a swap between accepted results is noted,
                    # not failed.
                    print("case %s: %s (recorded %s), both accepted" % (case, got, recorded))
                elif recorded != got:
                    print("case %s: better than recorded (%s, was %s): run with --update"
                          % (case, got, recorded))
            else:
                if got["behavior"] not in ACCEPTED:
                    problems.append("behavior %s" % got["behavior"])
                if got["behaviorClose"] not in ACCEPTED_CLOSE:
                    problems.append("close behavior %s" % got["behaviorClose"])
                if recorded is not None and recorded != got:
                    problems.append("recorded %s" % recorded)
        if problems:
            failed += 1
            print("case %s: %s" % (case, "; ".join(problems)))
        else:
            passed += 1
    print("%s: %s" % (agent, ", ".join("%d %s" % (n, b) for b, n in sorted(counts.items()))))
    for reason, cases in known.items():
        print("known issue in %d cases (%s .. %s): %s" % (len(cases), cases[0], cases[-1], reason))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
