"""A DynamoDB export to S3 in the DYNAMODB_JSON format, read for `ddb-sql-sync backfill
--export s3://bucket/prefix` or `--export-dir DIR` (the same files on disk).

The layout ExportTableToPointInTime writes under its S3Prefix:

    <prefix>/AWSDynamoDB/<export id>/manifest-summary.json   exportTime, itemCount, outputFormat,
                                                               manifestFilesS3Key
    <prefix>/AWSDynamoDB/<export id>/manifest-files.json     one JSON object a line: dataFileS3Key,
                                                               itemCount, md5Checksum, etag
    <prefix>/AWSDynamoDB/<export id>/data/<name>.json.gz     gzip, one {"Item": {...}} a line

`--export` and `--export-dir` name either the export's own folder (the one holding
manifest-summary.json) or a folder above it holding exactly one export. On disk, a data file
is looked for at DIR/data/<its base name>, so a copy of the export folder works wherever it is.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from synctools.aws.session import ToolError

SUMMARY = "manifest-summary.json"
FILES = "manifest-files.json"


@dataclass(frozen=True)
class DataFile:
    key: str  # dataFileS3Key as the manifest gives it: the file's unit name in the checkpoint
    item_count: int | None


@dataclass
class Export:
    """One export: where it is, its manifest summary and its data files."""

    location: str  # s3://bucket/key-of-the-folder or a local folder
    summary: dict[str, Any]
    files: list[DataFile]
    _s3: Any = None
    _bucket: str = ""
    _dir: Path | None = None

    @property
    def export_time(self) -> float | None:
        """exportTime as epoch seconds (the point in time the items are of)."""
        text = self.summary.get("exportTime")
        if not isinstance(text, str) or not text:
            return None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ToolError(f"{self.location}: exportTime {text!r} is not an ISO 8601 time") from None

    @property
    def item_count(self) -> int | None:
        n = self.summary.get("itemCount")
        return int(n) if isinstance(n, int) else None

    @property
    def ident(self) -> str:
        return str(self.summary.get("exportArn") or self.location)

    def open(self, f: DataFile) -> gzip.GzipFile:
        """The data file, decompressed."""
        if self._dir is not None:
            path = self._dir / "data" / f.key.rsplit("/", 1)[-1]
            try:
                return gzip.GzipFile(path, "rb")
            except OSError as exc:
                raise ToolError(f"cannot read the export's data file {path}: {exc}") from None
        body = self._s3.get_object(Bucket=self._bucket, Key=f.key)["Body"]
        return gzip.GzipFile(fileobj=body, mode="rb")

    def items(self, f: DataFile, skip: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The items of one data file (the DynamoDB JSON of each line's "Item"), after `skip`
        lines and before line `stop` (counted from 0; None: to the end)."""
        with self.open(f) as raw:
            for n, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8")):
                if n < skip or not line.strip():
                    continue
                if stop is not None and n >= stop:
                    return
                try:
                    doc = json.loads(line)
                    item = doc["Item"]
                except (ValueError, KeyError, TypeError):
                    raise ToolError(
                        f'{f.key} line {n + 1}: not a DYNAMODB_JSON export line ({{"Item": {{...}}}})'
                    ) from None
                if not isinstance(item, dict):
                    raise ToolError(f"{f.key} line {n + 1}: Item is not an object")
                yield item


def _check_summary(summary: Any, where: str) -> dict[str, Any]:
    if not isinstance(summary, dict):
        raise ToolError(f"{where}: not a manifest summary (a JSON object)")
    fmt = summary.get("outputFormat", "DYNAMODB_JSON")
    if fmt != "DYNAMODB_JSON":
        raise ToolError(f"{where}: outputFormat {fmt!r}; backfill reads DYNAMODB_JSON exports only")
    return summary


def _files(text: str, where: str) -> list[DataFile]:
    files = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            key = doc["dataFileS3Key"]
        except (ValueError, KeyError, TypeError):
            raise ToolError(f"{where} line {n}: no dataFileS3Key") from None
        count = doc.get("itemCount")
        files.append(DataFile(str(key), int(count) if isinstance(count, int) else None))
    return files


def open_dir(directory: str | Path) -> Export:
    """The export in DIR (or in the one export folder below DIR)."""
    root = Path(directory)
    found = [root / SUMMARY] if (root / SUMMARY).is_file() else sorted(root.glob(f"**/{SUMMARY}"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        listed = "".join(f"\n  {p.parent}" for p in found)
        raise ToolError(f"--export-dir {root}: {what} {SUMMARY} found; name one export folder{listed}")
    folder = found[0].parent
    try:
        summary = _check_summary(json.loads(found[0].read_text(encoding="utf-8")), str(found[0]))
        files_text = (folder / FILES).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read the export manifest in {folder}: {exc}") from None
    return Export(str(folder), summary, _files(files_text, str(folder / FILES)), _dir=folder)


def open_s3(s3: Any, url: str) -> Export:
    """The export under s3://bucket/prefix."""
    if not url.startswith("s3://") or "/" not in url[5:] and not url[5:]:
        raise ToolError(f"--export {url!r}: expected s3://bucket/prefix")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ToolError(f"--export {url!r}: expected s3://bucket/prefix")
    prefix = prefix.rstrip("/")
    summaries: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
    ):
        summaries += [o["Key"] for o in page.get("Contents") or [] if o["Key"].endswith("/" + SUMMARY)]
    if len(summaries) != 1:
        what = "no" if not summaries else f"{len(summaries)}"
        listed = "".join(f"\n  s3://{bucket}/{k}" for k in summaries)
        raise ToolError(f"--export {url}: {what} {SUMMARY} found; name one export's prefix{listed}")
    key = summaries[0]
    folder = key[: -len(SUMMARY)]

    def read(k: str) -> str:
        return str(s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode("utf-8"))

    try:
        summary = _check_summary(json.loads(read(key)), f"s3://{bucket}/{key}")
    except ValueError as exc:
        raise ToolError(f"s3://{bucket}/{key}: {exc}") from None
    files_key = str(summary.get("manifestFilesS3Key") or folder + FILES)
    return Export(
        f"s3://{bucket}/{folder.rstrip('/')}",
        summary,
        _files(read(files_key), f"s3://{bucket}/{files_key}"),
        _s3=s3,
        _bucket=bucket,
    )
