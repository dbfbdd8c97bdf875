"""Excel ``.xlsx`` workbooks: one sheet read as rows, streamed by openpyxl's read-only mode.

The first row names the columns (``data.header: false``: columns are numbered from 0); a row's "line" is its row
number in the sheet. Cells keep their types (numbers stay numbers, dates become ISO text); formulas give the value
Excel last computed. A row holding an error cell (``#N/A``, ``#DIV/0!``) or values beyond the named columns is
rejected with its row and column, and the rows around it are read.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from typing import Any

from tunesmith.core.errors import DataError
from tunesmith.data.rows import EXCERPT, ReadOptions, Reject, Row, RowStream


def read_xlsx(path: Path, options: ReadOptions) -> RowStream:
    from openpyxl import load_workbook
    from openpyxl.utils.cell import get_column_letter
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{path}: not a readable Excel .xlsx workbook ({exc})") from None
    try:
        if options.sheet is not None and options.sheet not in book.sheetnames:
            raise DataError(
                f"{path}: no sheet named {options.sheet!r} (data.sheet); the sheets are {', '.join(book.sheetnames)}"
            )
        sheet = book[options.sheet] if options.sheet is not None else book.worksheets[0]
        where = f"sheet {sheet.title!r}"
        names: list[str] | None = None
        for number, cells in enumerate(sheet.iter_rows(min_row=1), start=1):
            values = [_value(cell) for cell in cells]
            while values and values[-1] is None:
                values.pop()
            if not values or all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            if names is None and options.header is not False:
                names = [str(v).strip() if v is not None else str(i) for i, v in enumerate(values)]
                continue
            if names is None:  # no header: the first row says how many columns there are
                names = [str(i) for i in range(len(values))]
            errors = [(i, cell.value) for i, cell in enumerate(cells) if getattr(cell, "data_type", None) == "e"]
            if errors:
                i, code = errors[0]
                field = names[i] if i < len(names) else str(i)
                yield Reject(
                    f"{path}:{number}",
                    f"{where}, cell {get_column_letter(i + 1)}{number} (field {field!r}): the cell holds the Excel "
                    f"error {code}; expected a value",
                    _excerpt(values),
                    kind="wrong_type",
                )
                continue
            if len(values) > len(names):
                yield Reject(
                    f"{path}:{number}",
                    f"{where}, row {number}: expected {len(names)} fields ({', '.join(names)}), got a value in "
                    f"column {get_column_letter(len(values))}",
                    _excerpt(values),
                    kind="wrong_field_count",
                )
                continue
            values += [None] * (len(names) - len(values))
            yield Row(number, dict(zip(names, values, strict=True)))
    finally:
        book.close()


def _value(cell: Any) -> Any:
    value = cell.value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _excerpt(values: list[Any]) -> str:
    return " | ".join("" if v is None else str(v) for v in values)[:EXCERPT]
