#!/usr/bin/python3
"""Self time per operator in a LibTorch Chrome trace (nordf-bench --profile FILE): each event's
duration minus the durations of the events nested in it on the same thread, summed by name.

Usage: bench/profile_summary.py FILE [ROWS]
"""
import collections
import json
import sys

trace = json.load(open(sys.argv[1]))
events = trace["traceEvents"] if isinstance(trace, dict) else trace
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 20
by_thread = collections.defaultdict(list)
for e in events:
    if e.get("ph") == "X" and "dur" in e:
        by_thread[e.get("tid")].append(e)
self_us, calls, total = collections.Counter(), collections.Counter(), 0.0
for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []  # [end, event, child time]
    for e in evs:
        while stack and stack[-1][0] <= e["ts"]:
            end, ev, child = stack.pop()
            self_us[ev["name"]] += ev["dur"] - child
        if stack:
            stack[-1][2] += e["dur"]
        else:
            total += e["dur"]
        calls[e["name"]] += 1
        stack.append([e["ts"] + e["dur"], e, 0.0])
    for end, ev, child in stack:
        self_us[ev["name"]] += ev["dur"] - child
print(f"{'operator':48s} {'self ms':>9s} {'share':>6s} {'calls':>6s}")
for name, us in self_us.most_common(rows):
    print(f"{name[:48]:48s} {us / 1e3:9.1f} {100 * us / total:5.1f}% {calls[name]:6d}")
print(f"{'total (top-level events)':48s} {total / 1e3:9.1f}")
