#!/usr/bin/env python3
"""Seed corpus for fuzz_definition: every journey definition (a JSON object
with "steps") written in the regression tests, and each of their steps as
the executor compiles it ([kind, message_config, branch_config, next]).

    seeds_definition.py SQL_DIR CORPUS_DIR
"""
import hashlib
import json
import os
import re
import sys

sql_dir, corpus = sys.argv[1], sys.argv[2]
os.makedirs(corpus, exist_ok=True)
# Literals: '...' (with '' escapes) and $tag$...$tag$.
literal = re.compile(r"'((?:[^']|'')*)'|\$([A-Za-z_]*)\$(.*?)\$\2\$", re.S)


def save(text):
    name = hashlib.sha1(text.encode()).hexdigest()
    with open(os.path.join(corpus, name), "w") as f:
        f.write(text)


found = 0
for fn in sorted(os.listdir(sql_dir)):
    if not fn.endswith(".sql"):
        continue
    with open(os.path.join(sql_dir, fn)) as f:
        src = f.read()
    for m in literal.finditer(src):
        text = m.group(1).replace("''", "'") if m.group(1) is not None else m.group(3)
        text = text.strip()
        if not text.startswith("{") or '"steps"' not in text:
            continue
        try:
            definition = json.loads(text)
        except ValueError:
            continue
        save(text)
        found += 1
        for step in definition.get("steps") or []:
            if not isinstance(step, dict):
                continue
            branch = step.get("branch_config")
            if step.get("kind") == "wait_until":
                branch = {k: step[k] for k in ("event", "then", "else") if k in step}
            save(json.dumps([step.get("kind"), step.get("message"), branch,
                             step.get("next"), step.get("template_id")]))
print(f"{found} definitions from {sql_dir}")
