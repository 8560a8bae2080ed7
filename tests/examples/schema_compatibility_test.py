#!/usr/bin/env python3
"""Schema growth as the Python example consumer meets it (docs/consumers.md, "Schemas grow").

1. Built against today's schemas, it reads every released event version: each committed fixture
   (tests/domain/event_fixtures/<type>.v<N>.bin, the bytes that version wrote) decodes to its type
   with the example's own generated code.
2. Built against an older schema, it reads today's events and skips what it does not know: code
   generated from a copy of events.fbs without the last field of every table and without the
   last event type of the union still decodes every fixture it knows, field for field equal to
   today's code, and sees the dropped type as a union member it does not know (which the
   example then only counts as a version, never fails on).

Usage: schema_compatibility_test.py <schemas dir> <fixtures dir> <scratch dir>
"""
import importlib
import pathlib
import re
import subprocess
import sys


def generate(schema_dir, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["flatc", "--python", "-o", str(out_dir), "-I", str(schema_dir),
                    str(schema_dir / "events.fbs")], check=True)
    return out_dir


def older_schema(text):
    """events.fbs as an older release could have had it: every table one field shorter, the
    union one member shorter (schemas only grow by appending)."""
    def drop_last_field(match):
        body = [line for line in match.group(2).split("\n")]
        fields = [i for i, line in enumerate(body) if re.match(r"\s*\w+\s*:", line)]
        if len(fields) >= 2:
            del body[fields[-1]]
        return match.group(1) + "\n".join(body) + "}"
    text = re.sub(r"(table \w+ \{)(.*?)\}", drop_last_field, text, flags=re.S)
    union = re.search(r"union EventData \{(.*?)\}", text, flags=re.S)
    members = [m.strip() for m in union.group(1).split(",") if m.strip()]
    dropped = members[-1]
    text = text.replace(union.group(0), "union EventData {\n  " + ",\n  ".join(members[:-1]) + ",\n}")
    return text, dropped


def load(path):
    """The generated package under `path`, imported fresh."""
    for name in [n for n in sys.modules if n == "ledger" or n.startswith("ledger.")]:
        del sys.modules[name]
    sys.path.insert(0, str(path))
    try:
        importlib.import_module("ledger.schema")
        modules = {}
        for file in (path / "ledger" / "schema").glob("*.py"):
            if file.stem != "__init__":
                modules[file.stem] = importlib.import_module("ledger.schema." + file.stem)
        return modules
    finally:
        sys.path.remove(str(path))


def camel(snake):
    return "".join(part.capitalize() for part in snake.split("_"))


def fields_of(schema_text):
    """{table: [(field, is_vector_or_table)]} from an .fbs text."""
    tables = {}
    for name, body in re.findall(r"table (\w+) \{(.*?)\}", schema_text, flags=re.S):
        fields = re.findall(r"^\s*(\w+)\s*:\s*([\w\[\]]+)", body, flags=re.M)
        tables[name] = [(field, kind.startswith("[")) for field, kind in fields]
    return tables


def read_table(modules, fields, type_name, payload):
    """(union member number, {field: value}) of the event in `payload`, read with `modules`;
    None for the values when that code does not know the member. Vectors compare by length."""
    event = modules["Event"].Event.GetRootAs(payload, 0)
    member = event.DataType()
    if type_name not in fields or member != getattr(modules["EventData"].EventData, type_name, None):
        return member, None
    table = getattr(modules[type_name], type_name)()
    table.Init(event.Data().Bytes, event.Data().Pos)
    values = {}
    for field, is_vector in fields[type_name]:
        accessor = camel(field)
        values[field] = getattr(table, accessor + "Length")() if is_vector else getattr(table, accessor)()
    return member, values


def main():
    schema_dir, fixtures_dir, scratch = (pathlib.Path(a) for a in sys.argv[1:4])
    today_text = (schema_dir / "events.fbs").read_text()
    today = load(generate(schema_dir, scratch / "today"))
    old_dir = scratch / "older-schema"
    old_dir.mkdir(parents=True, exist_ok=True)
    text, dropped_type = older_schema(today_text)
    (old_dir / "events.fbs").write_text(text)
    older = load(generate(old_dir, scratch / "older"))

    fixtures = sorted(fixtures_dir.glob("*.v*.bin"))
    assert fixtures, f"no fixtures under {fixtures_dir}"
    checked = 0
    for fixture in fixtures:
        type_name = camel(fixture.name.split(".")[0])
        payload = fixture.read_bytes()
        member, now = read_table(today, fields_of(today_text), type_name, payload)
        assert now is not None, f"{fixture.name}: today's code reads member {member}, not {type_name}"
        old_member, before = read_table(older, fields_of(text), type_name, payload)
        if type_name == dropped_type:
            assert before is None, f"{fixture.name}: the older code claims a type it does not know"
            assert old_member == member, f"{fixture.name}: the member number changed"
        else:
            assert before is not None, f"{fixture.name}: the older code cannot read {type_name}"
            for field, value in before.items():
                assert now.get(field) == value, f"{fixture.name}: {field} reads {value!r} before, {now.get(field)!r} now"
            assert len(now) - len(before) <= 1, f"{fixture.name}: the older schema lost more than one field"
        checked += 1
    print(f"schema compatibility: {checked} fixtures read by today's code and by code of an older schema "
          f"(one field fewer per table, no {dropped_type})")


if __name__ == "__main__":
    main()
