"""Part files: row groups sized by bytes, encodings, rows kept in order."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harvester.parts import MIN_GROUP_ROWS, ROW_GROUP_ROWS, write_part


def _batches(rows: int, per_batch: int, width: int) -> list[pa.RecordBatch]:
    out = []
    for start in range(0, rows, per_batch):
        n = min(per_batch, rows - start)
        out.append(
            pa.record_batch(
                {
                    "id": [f"item-{i:06d}" for i in range(start, start + n)],
                    "payload": ["x" * width] * n,
                    "eo:cloud_cover": [i / 7 for i in range(start, start + n)],
                }
            )
        )
    return out


def test_row_groups_hold_about_the_target_bytes(tmp_path: Path) -> None:
    batches = _batches(12_345, 700, 500)
    path = tmp_path / "part.parquet"
    rows = write_part(path, batches, batches[0].schema, row_group_bytes=2_000 * 520)
    meta = pq.read_metadata(path)
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert rows == sum(sizes) == 12_345
    assert len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]  # equal groups, the remainder last
    assert MIN_GROUP_ROWS <= sizes[0] <= 2_000
    table = pq.read_table(path)
    assert table.column("id").to_pylist() == [f"item-{i:06d}" for i in range(12_345)]
    column = meta.row_group(0).column(2)
    assert column.path_in_schema == "eo:cloud_cover" and "BYTE_STREAM_SPLIT" in column.encodings
    assert not meta.row_group(0).column(0).has_dictionary_page


def test_narrow_rows_are_capped_and_wide_rows_floored(tmp_path: Path) -> None:
    narrow = _batches(45_000, 5_000, 1)
    write_part(tmp_path / "narrow.parquet", narrow, narrow[0].schema)
    assert pq.read_metadata(tmp_path / "narrow.parquet").row_group(0).num_rows == ROW_GROUP_ROWS
    wide = _batches(2_500, 500, 100_000)
    write_part(tmp_path / "wide.parquet", wide, wide[0].schema)
    assert pq.read_metadata(tmp_path / "wide.parquet").row_group(0).num_rows == MIN_GROUP_ROWS
