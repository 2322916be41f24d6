"""Reading manifests by column (Arrow), the one reader every stage and report uses."""
from __future__ import annotations

from typing import Any, Sequence


def undictionary(table: Any) -> Any:
    """Dictionary-encoded columns (as read for speed) back to their value type."""
    import pyarrow as pa

    fields = [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
              for f in table.schema]
    return table.cast(pa.schema(fields))


def read_columns(out: Any, name: str, columns: Sequence[str] | None = None,
                 dictionary: Sequence[str] = ()) -> Any:
    """Only ``columns`` of a manifest as Arrow, cast to the declared types (a column an older
    manifest lacks reads as nulls). Columns in ``dictionary`` (repeated strings: status,
    notes, class, ids of segments) stay dictionary-encoded, which Parquet decodes about twice
    as fast as plain strings. ``ParquetFile`` rather than ``pq.read_table``: the latter
    imports pyarrow.dataset and pandas, a second of start-up for every ``curate select``.
    A file that is not that manifest is one ``ValueError`` naming it."""
    from manifests import schemas

    path = schemas.manifest_path(out, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes '{name}' first")
    schemas.regular_file(path, "manifest")
    try:
        return _read(path, schemas.TABLES[name], columns, dictionary)
    except schemas.UNREADABLE as e:
        raise schemas.unreadable(path, name, e) from e


def _read(path: Any, schema: Any, columns: Sequence[str] | None, dictionary: Sequence[str]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(columns) if columns is not None else schema.names
    pf = pq.ParquetFile(path)
    present = set(pf.schema_arrow.names)
    dict_cols = [c for c in dictionary if c in present and c in cols]
    if dict_cols:
        pf = pq.ParquetFile(path, read_dictionary=dict_cols)
    tbl = pf.read(columns=[c for c in cols if c in present], use_threads=True)
    for c in cols:
        if c not in present:
            tbl = tbl.append_column(schema.field(c), pa.nulls(tbl.num_rows, schema.field(c).type))
    fields = [tbl.schema.field(c) if c in dict_cols else schema.field(c) for c in cols]
    return tbl.select(cols).cast(pa.schema(fields))


#: windows columns read dictionary-encoded (repeated strings), besides every note column
WINDOW_DICT_COLUMNS = ("source_id", "shot_id", "class_name", "split", "status")


def read_windows_table(out: Any, columns: Sequence[str] | None = None) -> Any:
    """The windows manifest as Arrow (only ``columns``; default: what the selection reads),
    repeated strings dictionary-encoded."""
    from manifests import schemas

    if columns is None:
        columns = [c for c in schemas.WINDOWS.names if c != "error"]
    return read_columns(out, "windows", columns, dictionary=(*WINDOW_DICT_COLUMNS, *schemas.NOTE_COLUMNS))
