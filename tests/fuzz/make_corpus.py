#!/usr/bin/env python3
"""Regenerates the seed corpora under tests/fuzz/corpus/ from the project's own test inputs.

command_parser: every JSON body in tests/api/command_parser_test.cpp (raw string literals;
a field list after a template literal ending in "," completes that template), prefixed with its
route (the nearest CommandRoute:: before it) and path id 0 ("alice").
The decoder targets: fuzz_seeds (built by ops/fuzz.sh) from tests/domain/event_fixtures;
http_front and round_trip: fuzz_seeds from the bodies and requests written in it.
Seeds are named by SHA-1 like libFuzzer's own; regression inputs (crash-*) are kept.
Usage: make_corpus.py <build-fuzz dir>
"""
import hashlib
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests/fuzz/corpus"
ROUTES = ["open_account", "deposit", "withdrawal", "transfer", "hold", "post_hold", "void_hold",
          "freeze", "unfreeze", "close", "batch", "originate_loan", "disburse_loan", "repay_loan",
          "write_off_loan"]


def write(target: str, data: bytes) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def command_parser_seeds() -> int:
    text = (ROOT / "tests/api/command_parser_test.cpp").read_text()
    # Adjacent raw literals are one string, as in C++.
    token = re.compile(r'CommandRoute::(\w+)|((?:R"\((?:.*?)\)"\s*)+)', re.S)
    piece = re.compile(r'R"\((.*?)\)"', re.S)
    route = None
    template = None  # a body built as template + fields + "}" (the loan tests' helper)
    count = 0
    for match in token.finditer(text):
        if match.group(1):
            route = match.group(1) if match.group(1) in ROUTES else route
            continue
        literal = "".join(piece.findall(match.group(2)))
        if literal.startswith("{") and literal.endswith(","):
            template = literal
        if template is not None and literal.startswith('"') and not literal.startswith('"{'):
            literal = template + literal + "}"
        if route is not None and len(literal) <= 4096:
            write("command_parser", bytes([ROUTES.index(route), 0]) + literal.encode())
            count += 1
    return count


def main() -> None:
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build-fuzz")
    print(f"make_corpus: command_parser: {command_parser_seeds()} bodies")
    subprocess.run([str(build / "tests/fuzz/fuzz_seeds"), str(ROOT / "tests/domain/event_fixtures"),
                    str(CORPUS)], check=True)


if __name__ == "__main__":
    main()
