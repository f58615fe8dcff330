#!/usr/bin/env python3
"""Seed corpus for fuzz_definition: every journey definition (a JSON object
with "steps") written in the regression tests, every lone step they write
(wrapped in a definition), a few definitions that use every step kind and
condition, and each of their steps as the executor compiles it ([kind,
message_config, branch_config, next, template_id]).  Adding seeds to a
grown corpus is harmless: each is named by its hash.

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


def save_definition(definition):
    save(json.dumps(definition))
    for step in definition.get("steps") or []:
        if not isinstance(step, dict):
            continue
        branch = step.get("branch_config")
        if step.get("kind") == "wait_until":
            branch = {k: step[k] for k in ("event", "then", "else") if k in step}
        save(json.dumps([step.get("kind"), step.get("message"), branch,
                         step.get("next"), step.get("template_id")]))


TPL = "00000000-0000-0000-0000-0000000000a1"
COND = {"any": [{"field": "customer.attributes.score", "op": "gt", "value": 1e400},
                {"all": [{"field": "customer.email", "op": "exists"},
                         {"field": "customer.a.b", "op": "in", "value": [1, "x", True, None]},
                         {"event": "review_left", "since": "enrollment"},
                         {"random": 33.33}]},
                {"field": "customer.vip", "op": "neq", "value": False}]}
EVERY_KIND = {
    "name": "every kind", "description": "d", "status": "active",
    "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
    "allow_manual_enroll": True, "reentry": "never",
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "rate_per_hour": None, "rate_per_day": 10,
    "steps": [
        {"kind": "send_email", "wait_ms": 0,
         "message": {"purpose": "thank_you", "subject": "Hi {{customer.first_name}}",
                     "body": "{{ business.name | default: \"us\" }} {{review_link}}"}},
        {"kind": "branch", "branch_config": {"if": COND, "then": 3, "else": 5}},
        {"kind": "wait_until", "event": "review_left", "timeout_ms": 259200000,
         "then": 0, "else": 4},
        {"kind": "send_sms", "template_id": TPL, "message": {"purpose": "reminder"}},
        {"kind": "wait", "wait_ms": 3600000, "next": 6},
        {"kind": "send_sms", "message": {"body": "{{ enrollment.meta.x }} {{ event.a.b }}"}},
    ]}


found = 0
save_definition(EVERY_KIND)
# The executor's compile of a template step, with the template's texts.
save(json.dumps(["send_email", {"purpose": "p"}, None, None, TPL,
                 "Hi {{customer.first_name}}", "Body {{review_link}}"]))
save(json.dumps(["send_sms", {}, None, 0, TPL, None, "Thanks"]))
for fn in sorted(os.listdir(sql_dir)):
    if not fn.endswith(".sql"):
        continue
    with open(os.path.join(sql_dir, fn)) as f:
        # Comments first: an apostrophe in one would pair the quotes wrongly.
        src = re.sub(r"^\s*--.*$", "", f.read(), flags=re.M)
    for m in literal.finditer(src):
        text = m.group(1).replace("''", "'") if m.group(1) is not None else m.group(3)
        text = text.strip()
        if not text.startswith("{") or '"kind"' not in text:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        if "steps" not in value:
            # A lone step: as the first of three, so targets 2 and 3 exist.
            value = {"name": "step", "steps": [value, {"kind": "wait"}, {"kind": "wait"}]}
        save(text)
        save_definition(value)
        found += 1
print(f"{found} definitions from {sql_dir}")
