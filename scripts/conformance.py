#!/usr/bin/env python3
"""Summarizes `qtt` output (read from stdin) by issue #5's categories.

    ./target/debug/qtt ../shared/ksql-qtt 2>/dev/null | python3 scripts/conformance.py

Prints a Markdown table of the pass rate of non-skipped cases per category,
then the per-file table used in docs/status/conformance.md.
"""
import re
import sys

CATEGORIES = {
    "projection/filter": [
        "project-filter", "filter", "where", "identifiers", "system-columns",
        "row-offset-and-partition", "source-stream",
    ],
    "expressions": [
        "arrayindex", "array", "binary-comparison", "comparison-expression", "concat",
        "create-struct", "create_map", "like", "null", "operators", "floating-point",
    ],
    "types and casts": ["cast", "date", "time", "timestamp"],
    "functions": [
        "array-min-max-sort", "array-set-functions", "arrayjoin", "count", "datestring",
        "dateadd", "extract-json-field", "format-date", "from-unixtime", "greatest", "instr",
        "is_json_string", "json_concat", "json_keys", "latest-offset-udaf", "len", "math",
        "parse-date", "reduce-map", "regex", "replace", "slice", "split", "string-lpad-rpad",
        "stringdate", "stringtimestamp", "substring", "sum", "table-functions",
        "timestamp-to-string", "timestampadd", "timestampformat", "to_json_string",
        "transform-array", "unix-timestamp",
    ],
    "formats": ["json", "delimited", "kafka", "formats"],
    "keys / INSERT / DDL": ["partition-by", "insert-into", "create-type", "headers"],
}

LINE = re.compile(r"^(\S+)\.json: (\d+) passed, (\d+) failed, (\d+) skipped$")


def main():
    files = {}
    total = None
    for line in sys.stdin:
        line = line.rstrip("\n")
        m = LINE.match(line)
        if m:
            files[m.group(1)] = tuple(int(g) for g in m.group(2, 3, 4))
        elif line.startswith("qtt: "):
            total = line
    print("| category | passed | failed | rate |")
    print("|---|---:|---:|---:|")
    for name, members in CATEGORIES.items():
        p = sum(files.get(f, (0, 0, 0))[0] for f in members)
        f = sum(files.get(f, (0, 0, 0))[1] for f in members)
        rate = f"{100 * p // (p + f)}%" if p + f else "-"
        print(f"| {name} | {p} | {f} | {rate} |")
    print()
    print("| file | passed | failed | skipped |")
    print("|---|---:|---:|---:|")
    for name in sorted(files):
        p, f, s = files[name]
        print(f"| {name}.json | {p} | {f} | {s} |")
    if total:
        print()
        print(total)


if __name__ == "__main__":
    main()
