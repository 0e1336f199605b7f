"""Result writers: a terminal table, CSV and JSON, all streaming batch by batch."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import json
import math
import shutil
from collections.abc import Callable, Iterable
from typing import TextIO

from tap_stripe_dd.query.warehouse import Batches

MAX_CELL = 40
COLUMN_GAP = " | "
FOLD = str.maketrans("\t\r\n", "   ")


def rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, bytes):
        return _blob_text(value)
    if isinstance(value, list | tuple | dict):
        return _json(value)
    return str(value)


def _blob_text(value: bytes) -> str:
    """A BLOB as DuckDB writes it: printable ASCII as is, any other byte as \\xHH."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in value)


def _json(value: object) -> str:
    """Valid JSON whatever DuckDB returns: a BLOB is base64 text, and a NaN or infinite double
    (which JSON cannot hold, and `json.dumps` would write as NaN / Infinity) is the string
    "NaN", "Infinity" or "-Infinity", as PostgreSQL's to_json writes them."""
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)
    except ValueError:  # rare: only then is every value walked
        return json.dumps(_finite(value), default=_json_default, ensure_ascii=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_default(value: object) -> object:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def write_csv(batches: Batches, names: list[str], _: list[str], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    count = 0
    for batch in batches:
        writer.writerows([_text(value) for value in row] for row in batch)
        count += len(batch)
    return count


def write_json(batches: Batches, names: list[str], types: list[str], out: TextIO) -> int:
    """One object per line; JSON columns come back from DuckDB as text, so they are parsed."""
    is_json = [t == "JSON" for t in types]
    count = 0
    out.write("[")
    for batch in batches:
        for row in batch:
            record = {
                name: json.loads(value) if parse and isinstance(value, str) else value
                for name, value, parse in zip(names, row, is_json, strict=True)
            }
            out.write(",\n" if count else "\n")
            out.write(_json(record))
            count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def write_table(batches: Batches, names: list[str], _: list[str], out: TextIO) -> int:
    """Widths come from the first batch so output streams; cells wider than that are cut with
    `…`, and columns that do not fit the terminal are left out (and counted) rather than wrapped."""
    first = next(batches, [])
    cells = [[_cell(value) for value in row] for row in first]
    width = max(20, shutil.get_terminal_size().columns)
    layout = [
        (i, w, _is_number_column(row[i] for row in first)) for i, w in _layout(names, cells, width)
    ]

    def line(values: list[str]) -> str:
        return COLUMN_GAP.join(_fit(values[i], w, right) for i, w, right in layout).rstrip() + "\n"

    out.write(line(names))
    out.write("-+-".join("-" * w for _, w, _ in layout) + "\n")
    out.writelines(line(row) for row in cells)
    count = len(first)
    for batch in batches:
        out.writelines(line([_cell(value) for value in row]) for row in batch)
        count += len(batch)
    out.write(f"({rows(count)})\n")
    if hidden := len(names) - len(layout):
        more = f"{hidden} more column" + ("" if hidden == 1 else "s")
        out.write(f"({more} not shown: select fewer or use --format csv|json)\n")
    return count


def _is_number_column(values: Iterable[object]) -> bool:
    present = [value for value in values if value is not None]
    return bool(present) and all(isinstance(v, int | float | decimal.Decimal) for v in present)


def _cell(value: object) -> str:
    return "NULL" if value is None else _text(value).translate(FOLD)


def _layout(names: list[str], cells: list[list[str]], width: int) -> list[tuple[int, int]]:
    """(index, width) of the columns that fit, in query order. target-duckdb sorts columns by
    name, so its `_sdc_` bookkeeping comes first; it is the first to make way for Stripe's."""
    natural = [
        min(MAX_CELL, max([len(name), *(len(row[i]) for row in cells)]))
        for i, name in enumerate(names)
    ]
    chosen: list[int] = []
    used = -len(COLUMN_GAP)
    for i in sorted(range(len(names)), key=lambda i: names[i].startswith("_sdc_")):
        used += len(COLUMN_GAP) + natural[i]
        if used > width:
            break
        chosen.append(i)
    return [(i, natural[i]) for i in sorted(chosen)] or [(0, width)]


def _fit(text: str, width: int, right: bool) -> str:
    """Numbers align right, like in every spreadsheet; anything too long is cut with `…`."""
    cut = text if len(text) <= width else text[: width - 1] + "…"
    return cut.rjust(width) if right else cut.ljust(width)


WRITERS: dict[str, Callable[[Batches, list[str], list[str], TextIO], int]] = {
    "table": write_table,
    "csv": write_csv,
    "json": write_json,
}
