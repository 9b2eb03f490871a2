"""Reading rows from local files, directories of split files, or HuggingFace datasets.

Every row keeps where it came from (`Source`), so a validation error can name the file, the
row and the field. Splits are the canonical names `train, id_val, ood_val, id_test, ood_test`;
bio-post's published file names (`train_network_split.csv`, `id_test_network_split.csv`,
`ood_test_network_split.csv`) and common HF names (`validation`, `val`, `test`) map onto them.
"""
from __future__ import annotations

import csv
import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from biopost.errors import UserError

CANONICAL_SPLITS = ("train", "id_val", "ood_val", "id_test", "ood_test")
# evaluation names (`id`, `ood`) are the test splits; the val splits are probes
EVAL_SPLIT_ALIASES = {"id": "id_test", "ood": "ood_test"}
SPLIT_FILE_ALIASES = {
    "train_network_split": "train",
    "id_test_network_split": "id_test",
    "ood_test_network_split": "ood_test",
    "id_val_network_split": "id_val",
    "ood_val_network_split": "ood_val",
    "validation": "id_val",
    "val": "id_val",
    "test": "id_test",
}
EXTENSIONS = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv", ".csv.gz")


class DataError(UserError, ValueError):
    """Bad input data; the message names the file (or dataset), row and field."""


@dataclass(frozen=True)
class Source:
    file: str
    row: int          # 1-based data row (jsonl: line number; csv: data row after the header)
    unit: str = "row"  # "line" for jsonl

    def where(self, field: str | None = None) -> str:
        text = f"{self.file}: {self.unit} {self.row}"
        return f"{text}: field {field!r}" if field else text


def canonical_split(name: str) -> str | None:
    if name in CANONICAL_SPLITS:
        return name
    return SPLIT_FILE_ALIASES.get(name)


def _strip_ext(name: str) -> tuple[str, str] | None:
    for ext in EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return None


# Python's csv module refuses a field over 131,072 characters with a bare `_csv.Error`. Cell
# length is validation's business (it truncates over-long sequences and counts them), so the
# reader takes any field up to this fixed bound; a field beyond it is a DataError naming the row.
CSV_FIELD_LIMIT = 1 << 30


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _maybe_json(value):
    """CSV cells holding JSON (e.g. a reasoning dict or a list of GO ids) are decoded; a cell
    that only looks like JSON stays the string it is (validation then judges it)."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{" and text[-1:] in "]}":
            try:
                return json.loads(text)
            except (ValueError, RecursionError):  # JSONDecodeError, a 4,300+ digit integer
                return value
    return value


def _read_error(path: Path, e: BaseException, where: str = "") -> DataError:
    """The DataError for a file that cannot be decoded: it names the file (and the line, when
    known) and says what the file should be."""
    at = f"{path}: {where}: " if where else f"{path}: "
    if isinstance(e, UnicodeDecodeError):
        return DataError(f"{path}: {_bad_utf8(path)}not UTF-8 text; re-encode the file as UTF-8")
    if isinstance(e, (gzip.BadGzipFile, EOFError, zlib.error)):
        return DataError(f"{path}: not a readable gzip file ({e or type(e).__name__}); a .gz "
                         "file must be gzip-compressed and complete")
    if isinstance(e, RecursionError):
        return DataError(f"{at}JSON nested too deeply")
    if isinstance(e, OSError):
        return DataError(f"{path}: cannot read: {e.strerror or e}")
    return DataError(f"{at}{e}")


def read_file(path: str | Path) -> list[tuple[dict, Source]]:
    """The rows of one local file, each with its Source. Every way a file can be unreadable
    (not UTF-8, a .gz that is not gzip, bad JSON, a CSV row that does not fit its header) is a
    DataError naming the file and, where known, the line or row."""
    path = Path(path)
    name = path.name
    if not name.endswith(EXTENSIONS):
        raise DataError(f"{path}: unsupported file type (use {', '.join(EXTENSIONS)})")
    try:
        if name.endswith(".parquet"):
            return _read_parquet(path)
        with _open_text(path) as fh:
            if name.endswith((".jsonl", ".jsonl.gz")):
                return _read_jsonl(path, fh)
            if name.endswith(".json"):
                return _read_json(path, fh)
            return _read_csv(path, fh)
    except DataError:
        raise
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error, OSError,
            RecursionError) as e:
        raise _read_error(path, e) from None


def _read_jsonl(path: Path, fh) -> list[tuple[dict, Source]]:
    rows = []
    i = 0
    while True:
        i += 1
        line = fh.readline()
        if not line:
            return rows
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # an integer of 4,300+ digits; deep nesting
            raise DataError(f"{path}: line {i}: unreadable JSON ({_short(e)})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {i}: expected a JSON object, got {type(obj).__name__}")
        rows.append((obj, Source(str(path), i, "line")))


def _read_json(path: Path, fh) -> list[tuple[dict, Source]]:
    text = fh.read()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path}: unreadable JSON ({_short(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of row objects")
    rows = []
    for i, item in enumerate(obj, 1):
        if not isinstance(item, dict):
            raise DataError(f"{path}: row {i}: expected an object, got {type(item).__name__}")
        rows.append((item, Source(str(path), i)))
    return rows


def _read_csv(path: Path, fh) -> list[tuple[dict, Source]]:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(fh)
    rows = []
    try:
        header = next(reader, None)
        if header is None:
            return rows
        i = 0
        for rec in reader:
            if not rec:  # a blank line: skipped, not counted (as csv.DictReader does)
                continue
            i += 1
            if len(rec) > len(header):
                raise DataError(f"{path}: row {i} (line {reader.line_num}): {len(rec)} fields but "
                                f"the header has {len(header)}; quote values that contain commas")
            values = dict(zip(header, rec))
            for k in header[len(rec):]:
                values.setdefault(k, None)  # a short row: the missing fields are missing
            rows.append(({k: _maybe_json(v) for k, v in values.items()}, Source(str(path), i)))
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    return rows


def _read_parquet(path: Path) -> list[tuple[dict, Source]]:
    import pyarrow
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:  # ArrowInvalid: not a parquet file
        raise DataError(f"{path}: not a readable parquet file ({_short(e)})") from None
    return [(rec, Source(str(path), i)) for i, rec in enumerate(table.to_pylist(), 1)]


def _bad_utf8(path: Path) -> str:
    """'line N: byte 0xXX: ' of the first byte that is not UTF-8 (decoding in chunks does not
    know the line), or '' when it cannot be found again."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return f"line {lineno}: byte 0x{raw[e.start]:02x} at column {e.start + 1}: "
    except (OSError, EOFError, zlib.error):
        pass
    return ""


def _short(e: BaseException, limit: int = 200) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    text = str(e) or type(e).__name__
    if "4300 digits" in text:
        return "an integer of more than 4,300 digits"
    return text if len(text) <= limit else text[:limit] + "..."


def discover_split_files(directory: Path) -> dict[str, Path]:
    """split name -> file in `directory`; two files for one split is an error."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        parsed = _strip_ext(path.name)
        if not parsed or not path.is_file():
            continue
        split = canonical_split(parsed[0])
        if split is None:
            continue
        if split in found:
            raise DataError(f"{directory}: two files for split {split!r}: {found[split].name} and {path.name}")
        found[split] = path
    return found


def _is_hf_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def load_split_rows(source: str, splits: tuple[str, ...]) -> dict[str, list[tuple[dict, Source]]]:
    """Raw rows of the requested splits. A missing requested split is an error naming the
    source and the splits it does have (callers ask only for the splits they need)."""
    path = Path(source)
    available: dict[str, list[tuple[dict, Source]]] | None = None
    if path.is_dir() and _is_hf_saved_dataset(path):
        available = _from_hf(_load_from_disk(path), str(path), splits)
    elif path.is_dir():
        files = discover_split_files(path)
        missing = [s for s in splits if s not in files]
        if missing:
            raise DataError(f"{path}: no file for split(s) {', '.join(missing)} "
                            f"(found: {', '.join(sorted(files)) or 'none'}; expected names like "
                            f"train.jsonl, id_test.csv, ood_test_network_split.csv)")
        return {s: read_file(files[s]) for s in splits}
    elif path.is_file():
        rows = read_file(path)
        if any("split" in r for r, _ in rows):
            available = {}
            for r, src in rows:
                split = canonical_split(str(r.get("split", "")))
                if split:
                    available.setdefault(split, []).append((r, src))
        elif tuple(splits) == ("train",):
            return {"train": rows}
        else:
            raise DataError(f"{path}: a single file without a 'split' column can only serve as 'train' "
                            f"(asked for {', '.join(splits)})")
    elif source.startswith(("/", "./", "../")) or path.suffix in {".jsonl", ".json", ".csv", ".parquet"}:
        raise DataError(f"{source}: no such file or directory")
    else:
        available = _from_hf(_load_hub(source), source, splits)
    missing = [s for s in splits if s not in available]
    if missing:
        raise DataError(f"{source}: no split(s) {', '.join(missing)} (found: {', '.join(sorted(available)) or 'none'})")
    return {s: available[s] for s in splits}


def _load_from_disk(path: Path):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a saved HF dataset; `pip install datasets` to read it") from None
    return datasets.load_from_disk(str(path))


def _load_hub(name: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name!r} is not a local path; loading it as a HF dataset needs `pip install datasets`") from None
    try:
        return datasets.load_dataset(name)
    except Exception as e:  # the hub client raises many types; say what was tried
        raise DataError(f"{name!r}: not a local file or directory, and loading it as a HF dataset failed: "
                        f"{type(e).__name__}: {e}") from None


def _from_hf(ds, label: str, splits) -> dict[str, list[tuple[dict, Source]]]:
    if not hasattr(ds, "keys"):  # a single Dataset
        ds = {"train": ds}
    out: dict[str, list[tuple[dict, Source]]] = {}
    for name in ds.keys():
        split = canonical_split(name)
        if split is None or split in out:
            continue
        out[split] = [(dict(r), Source(f"{label}[{name}]", i)) for i, r in enumerate(ds[name], 1)]
    return out
