#!/usr/bin/env python3
"""Summarises memcheck logs (vg.<pid>.log) of a run of test/valgrind/run.sh:
counts the error reports, and prints in full those whose stack (or the
origin of the uninitialised value) enters journey's own code."""
import collections
import glob
import os
import re
import sys

logdir = sys.argv[1]
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
journey_files = {os.path.basename(f) for f in glob.glob(os.path.join(src, "*.[ch]"))}
frame = re.compile(r"(?:at|by) 0x[0-9A-F]+: (\S+) \((?:in (\S+)|([^:()]+):\d+)\)")
start = re.compile(r"^(Conditional jump|Use of uninitialised|Invalid (read|write|free)|"
                   r"Syscall param|Mismatched free|Source and destination overlap|"
                   r"Argument .* of function|Jump to|Process terminating|"
                   r"[\d,]+ (\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ blocks are definitely lost)")


def enters_journey(block):
    for line in block:
        m = frame.search(line)
        if not m:
            continue
        obj, srcfile = m.group(2), m.group(3)
        if obj and obj.endswith("journey.so"):
            return True
        if srcfile and os.path.basename(srcfile) in journey_files and "/postgres" not in (obj or ""):
            return True
    return False


total = 0
suppressed = 0
mine = []
processes = 0
for path in sorted(glob.glob(os.path.join(logdir, "vg.*.log"))):
    processes += 1
    block = []
    with open(path, errors="replace") as f:
        lines = [re.sub(r"^==\d+== ?", "", l.rstrip("\n")) for l in f]
    blocks, cur = [], []
    for l in lines + [""]:
        if l.strip() == "":
            if cur:
                blocks.append(cur)
            cur = []
        else:
            cur.append(l)
    for l in lines:
        m = re.search(r"ERROR SUMMARY: .*\(suppressed: ([\d,]+) from", l)
        if m:
            suppressed += int(m.group(1).replace(",", ""))
    for b in blocks:
        if not start.match(b[0]) or b[0].startswith("Process terminating"):
            continue
        total += 1
        if enters_journey(b):
            mine.append((path, b))

print("processes traced: %d" % processes)
print("error reports total: %d" % total)
print("suppressed as Postgres' known false positives (journey.supp): %d" % suppressed)
print("reports entering journey: %d" % len(mine))
# The same report in many backends once, keyed by its kind and first frames.
distinct = collections.OrderedDict()
for path, b in mine:
    frames = [frame.search(l).group(1) for l in b if frame.search(l)][:6]
    key = (re.sub(r"[\d,]+", "N", b[0]), tuple(frames))
    distinct.setdefault(key, []).append((path, b))
print("distinct journey reports: %d" % len(distinct))
for (kind, frames), hits in distinct.items():
    print("\n=== %d x %s (e.g. %s)" % (len(hits), kind, os.path.basename(hits[0][0])))
    print("\n".join(hits[0][1]))
