"""Validates pipeline config examples (TOML fragments) against syncline's JSON Schema.

A fragment is laid over a minimal complete pipeline, so a `[streams.x]` or `[source]` snippet
is checked in the context it would live in: `source` and `destination` tables replace the
base's whole (their keys depend on `type`), other tables merge key by key.

Usage: validate_config_examples.py SCHEMA.json EXAMPLE.toml... (prints one line per file; exit 1
when any is refused). Run by tests/it/docs.rs.
"""
import json, sys, tomllib
import jsonschema

BASE = {
    "pipeline": {"name": "crm"},
    "staging": {"url": "file:///tmp/stage"},
    "source": {"type": "hubspot", "token": "t", "streams": ["contacts"]},
    "destination": {"type": "postgres", "url": "postgres://u@h/db"},
}

def merged(base, fragment):
    out = dict(base)
    for key, value in fragment.items():
        if key in ("source", "destination") or not isinstance(value, dict) or not isinstance(out.get(key), dict):
            out[key] = value
        else:
            out[key] = merged(out[key], value)
    return out

schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
failures = 0
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        fragment = tomllib.load(f)
    config = merged(BASE, fragment)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    for error in errors[:3]:
        failures += 1
        where = ".".join(str(p) for p in error.path) or "(top)"
        print(f"{path}: {where}: {error.message[:300]}")
    if not errors:
        print(f"{path}: ok")
sys.exit(1 if failures else 0)
