"""`biopost data kegg-network-split`: the published study's pathway-network split of wanglab/kegg.

The study (mims-harvard/bio-mirage, `data/kegg_network_split/`) repartitioned the 1,449 rows of
`wanglab/kegg` by KEGG pathway network: 1,159 train, 145 ID, 145 OOD rows, the OOD rows coming from
9 networks absent from training. Row content is unchanged. The split ships here as bio-mirage's
row map (`resources/kegg_network_split/network_split_to_wanglab_kegg.csv`: each split row's
`wanglab/kegg` split and row index) plus a manifest with the pinned `wanglab/kegg` revision and
the md5s of the three files bio-mirage's `build_network_split.py` writes.

The build, top to bottom:
  1. read the manifest and the row map (md5-checked, then checked for shape);
  2. load `wanglab/kegg` at the pinned revision from the hub, or from a local copy (`--source`);
  3. pick each split's rows in `network_row` order;
  4. render each split as the CSV bio-mirage writes (pandas `to_csv(index=False)` of the columns
     question, answer, reasoning, reference_sequence, variant_sequence) and check its md5 against
     the manifest; nothing is written unless all three match;
  5. write `{train,id_test,ood_test}_network_split.{csv,jsonl}` into a staging directory, read
     them back through the project's loader (`biopost.data.io`), and only then move them into
     place (each an atomic rename).

`reasoning` is a string in `wanglab/kegg`; the BioReason raw form is a struct
`{reasoning_steps: [...], labels: {...}}`. A CSV cell cannot hold a struct, so a struct is
written as its JSON text, which the loader decodes back into the same mapping. (For such a source
the md5s in a manifest refer to that rendering; bio-mirage's own script would have written a
Python repr there, which nothing can read back.) `--format jsonl` keeps every value natively.

Caveat from the study: it used `id_test` as its validation split (checkpoint selection), so
numbers on `id_test` are optimistic; `ood_test` is the honest held-out number.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from biopost.data.io import EXTENSIONS, DataError, canonical_split
from biopost.errors import UserError

RESOURCES = Path(__file__).resolve().parent / "resources" / "kegg_network_split"
MANIFEST = RESOURCES / "manifest.json"

# What bio-mirage's build_network_split.py selects and writes, in its order.
COLUMNS = ("question", "answer", "reasoning", "reference_sequence", "variant_sequence")
SOURCE_SPLITS = ("train", "val", "test")          # wanglab/kegg's splits
SPLITS = ("train", "id_test", "ood_test")         # the network split's
ROW_MAP_HEADER = ["network_split", "network_row", "wanglab_kegg_split", "wanglab_kegg_row", "answer"]
FORMATS = ("csv", "jsonl")

ID_CAVEAT = ("note: the study used id_test as its validation split (checkpoint selection), so ID "
             "numbers on it are optimistic; ood_test (9 pathway networks absent from training) is the "
             "honest held-out number.")


class Md5MismatchError(DataError):
    """A built split whose bytes differ from the manifest's md5: the source is not the pinned
    revision (or was modified), or the row map is not the one the manifest describes."""


class HubUnreachableError(DataError):
    """The HuggingFace hub could not be reached (offline mode, no network, DNS, timeout)."""


# --- manifest and row map -----------------------------------------------------------------------

def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_manifest(path: str | Path = MANIFEST) -> dict:
    """The manifest: dataset, revision, row map (file relative to the manifest, md5) and, per
    split, the expected file name, row count and md5. Its row map path is resolved here."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the manifest ({e})") from None
    try:
        dataset, revision = str(manifest["dataset"]), str(manifest["revision"])
        row_map = path.parent / manifest["row_map"]["file"]
        splits = {s: {"file": str(manifest["splits"][s]["file"]), "rows": int(manifest["splits"][s]["rows"]),
                      "md5": str(manifest["splits"][s]["md5"]).lower()} for s in SPLITS}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not a kegg-network-split manifest (missing or bad entry {e}); it needs "
                        f"dataset, revision, row_map.file and splits.{{{','.join(SPLITS)}}}.{{file,rows,md5}}") from None
    return {"path": path, "dataset": dataset, "revision": revision, "row_map": row_map,
            "row_map_md5": manifest["row_map"].get("md5"), "splits": splits}


def read_row_map(path: str | Path, expected_md5: str | None = None) -> dict[str, list[dict]]:
    """network split -> its rows in `network_row` order, each {"source_split", "source_row",
    "answer"}. The file is md5-checked (when the manifest gives one) so an edited row map cannot
    pass silently, and every split's `network_row` must run 0..n-1."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the row map ({e.strerror or e})") from None
    if expected_md5 and md5_hex(data) != expected_md5.lower():
        raise Md5MismatchError(f"{path.name}: md5 mismatch: expected {expected_md5.lower()}, got {md5_hex(data)} "
                               f"(the row map at {path} is not the one the manifest describes)")
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None)
    if header != ROW_MAP_HEADER:
        raise DataError(f"{path}: row map header is {header}, expected {ROW_MAP_HEADER}")
    by_split: dict[str, list[tuple[int, dict]]] = {s: [] for s in SPLITS}
    for line, rec in enumerate(reader, 2):
        if len(rec) != len(ROW_MAP_HEADER):
            raise DataError(f"{path}: line {line}: expected {len(ROW_MAP_HEADER)} fields, got {len(rec)}")
        split, network_row, source_split, source_row, answer = rec
        if split not in by_split:
            raise DataError(f"{path}: line {line}: unknown network_split {split!r} (expected one of {', '.join(SPLITS)})")
        if source_split not in SOURCE_SPLITS:
            raise DataError(f"{path}: line {line}: unknown wanglab_kegg_split {source_split!r} "
                            f"(expected one of {', '.join(SOURCE_SPLITS)})")
        try:
            key, row = int(network_row), int(source_row)
        except ValueError:
            raise DataError(f"{path}: line {line}: network_row and wanglab_kegg_row must be integers") from None
        by_split[split].append((key, {"source_split": source_split, "source_row": row, "answer": answer}))
    out = {}
    for split, entries in by_split.items():
        entries.sort(key=lambda e: e[0])  # bio-mirage: sort_values("network_row")
        if [k for k, _ in entries] != list(range(len(entries))):
            raise DataError(f"{path}: network_row of split {split!r} must run 0..{len(entries) - 1} without gaps or repeats")
        out[split] = [e for _, e in entries]
    return out


# --- the source: wanglab/kegg from the hub, or a local copy -------------------------------------

def load_source(source: str | Path | None, dataset: str, revision: str) -> tuple[dict[str, list[dict]], str]:
    """wanglab/kegg's rows per split ("train", "val", "test") and a label naming where they came
    from. `source=None` loads `dataset` at `revision` from the hub (or the HF cache, offline)."""
    if source is None:
        return _from_datasets(_load_hub(dataset, revision), f"{dataset}@{revision}"), f"{dataset}@{revision[:12]}"
    path = Path(source)
    if not path.exists():
        raise DataError(f"--source {source}: no such file or directory")
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return _from_datasets(_load_from_disk(path), str(path)), str(path)
    if path.is_file():
        return _split_column_file(path), str(path)
    return _from_table_files(path, dataset, revision), str(path)


def _load_hub(dataset: str, revision: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"loading {dataset} from the hub needs the `datasets` package (pip install datasets), "
                        f"or pass --source with a local copy") from None
    try:
        return datasets.load_dataset(dataset, revision=revision)
    except Exception as e:  # the hub client raises many types; unreachable is the one users can fix
        if _is_unreachable(e):
            raise HubUnreachableError(
                f"cannot reach the HuggingFace hub for {dataset} at revision {revision} ({_reason(e)}); "
                f"on a machine without network access pass --source with a local copy (its parquet files, "
                f"an HF cache directory, or a save_to_disk directory)") from None
        raise DataError(f"loading {dataset} at revision {revision} failed: {_reason(e)}") from None


_UNREACHABLE_NAMES = {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError", "ConnectTimeout",
                      "ConnectTimeoutError", "ReadTimeout", "Timeout", "NewConnectionError",
                      "MaxRetryError", "NameResolutionError"}


def _is_unreachable(e: BaseException) -> bool:
    """Offline mode, no route, DNS failure or timeout anywhere in the exception chain."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _UNREACHABLE_NAMES:
            return True
        if "ConnectionError" in type(e).__name__:  # requests.ConnectionError is not the builtin one
            return True
        e = e.__cause__ or e.__context__
    return False


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _load_from_disk(path: Path):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a saved HF dataset; reading it needs `pip install datasets`") from None
    return datasets.load_from_disk(str(path))


def _from_datasets(ds, label: str) -> dict[str, list[dict]]:
    if not hasattr(ds, "keys"):
        raise DataError(f"{label}: expected a dataset with splits {', '.join(SOURCE_SPLITS)}, got a single split")
    names = {("val" if n == "validation" else n): n for n in ds.keys()}
    missing = [s for s in SOURCE_SPLITS if s not in names]
    if missing:
        raise DataError(f"{label}: no split(s) {', '.join(missing)} (found: {', '.join(sorted(ds.keys()))})")
    return {s: [dict(r) for r in ds[names[s]]] for s in SOURCE_SPLITS}


_SPLIT_TOKEN = re.compile(r"(?:^|[-_.])(train|val|validation|test)(?=[-_.]|$)")


def _split_of(path: Path) -> str | None:
    """The wanglab/kegg split a data file holds, from its name (`data/train-00000-of-00001.parquet`,
    `kegg-val.arrow`) or its directory (`default/test/0000.parquet`)."""
    for name in (path.name.split(".")[0], path.parent.name):
        m = _SPLIT_TOKEN.search(name)
        if m:
            return "val" if m.group(1) == "validation" else m.group(1)
    return None


def _from_table_files(root: Path, dataset: str, revision: str) -> dict[str, list[dict]]:
    """Parquet (or datasets' .arrow) files under `root`: a copy of the dataset's `data/` folder, a
    hub snapshot, or an HF cache directory (hub or datasets cache). In a cache holding several
    datasets only this one's folder is used, and in a hub cache only the pinned revision's snapshot."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file())
    owner, _, name = dataset.partition("/")
    # hub cache: datasets--wanglab--kegg/snapshots/<rev>/...; datasets cache: wanglab___kegg/...
    cache_dirs = {f"datasets--{owner}--{name}", f"{owner}___{name}"}
    if any(cache_dirs & set(p.parts) for p in files):
        files = [p for p in files if cache_dirs & set(p.parts)]
    snapshots = {p.parts[p.parts.index("snapshots") + 1] for p in files
                 if "snapshots" in p.parts[:-1] and p.parts.index("snapshots") + 1 < len(p.parts) - 1}
    if snapshots:
        if revision not in snapshots:
            raise DataError(f"--source {root}: an HF hub cache without revision {revision} "
                            f"(it has snapshot(s) {', '.join(sorted(snapshots))})")
        files = [p for p in files if revision in p.parts]
    groups: dict[str, list[Path]] = {}
    for p in files:
        split = _split_of(p)
        if split:
            groups.setdefault(split, []).append(p)
    missing = [s for s in SOURCE_SPLITS if s not in groups]
    if missing:
        raise DataError(f"--source {root}: found no parquet/arrow file for wanglab/kegg split(s) {', '.join(missing)} "
                        f"(expected names like data/train-00000-of-00001.parquet, val-*.parquet, test-*.parquet)")
    out = {}
    for split in SOURCE_SPLITS:
        parents = {p.parent for p in groups[split]}
        if len(parents) > 1:
            raise DataError(f"--source {root}: split {split!r} has files in {len(parents)} folders "
                            f"({', '.join(sorted(str(d) for d in parents))}); point --source at one copy")
        out[split] = [row for p in groups[split] for row in _read_table(p)]
    return out


def _read_table(path: Path) -> list[dict]:
    import pyarrow as pa
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq
            table = pq.read_table(path)
        else:  # datasets' cache files are Arrow IPC streams
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return table.to_pylist()


def _split_column_file(path: Path) -> dict[str, list[dict]]:
    """One parquet file holding every split, told apart by a `split` column."""
    if path.suffix != ".parquet":
        raise DataError(f"--source {path}: a single file must be parquet with a 'split' column "
                        f"(or pass a directory: parquet files per split, an HF cache, a save_to_disk folder)")
    rows = _read_table(path)
    if rows and "split" not in rows[0]:
        raise DataError(f"--source {path}: a single parquet file needs a 'split' column "
                        f"({', '.join(SOURCE_SPLITS)}); pass the folder of per-split files instead")
    out: dict[str, list[dict]] = {s: [] for s in SOURCE_SPLITS}
    for row in rows:
        split = "val" if row.get("split") == "validation" else row.get("split")
        if split in out:
            out[split].append({k: v for k, v in row.items() if k != "split"})
    missing = [s for s in SOURCE_SPLITS if not out[s]]
    if missing:
        raise DataError(f"--source {path}: no rows for split(s) {', '.join(missing)}")
    return out


# --- building, rendering, checking ----------------------------------------------------------------

def select_rows(source: dict[str, list[dict]], row_map: dict[str, list[dict]], label: str) -> dict[str, list[dict]]:
    """Each network split's rows, in `network_row` order, restricted to COLUMNS."""
    for split, rows in source.items():
        if rows:
            absent = [c for c in COLUMNS if c not in rows[0]]
            if absent:
                raise DataError(f"{label}: split {split!r} has no column(s) {', '.join(absent)} "
                                f"(wanglab/kegg has {', '.join(COLUMNS)})")
    out = {}
    for split, entries in row_map.items():
        picked = []
        for e in entries:
            rows = source[e["source_split"]]
            if e["source_row"] >= len(rows) or e["source_row"] < 0:
                raise DataError(f"{label}: the row map asks for {e['source_split']} row {e['source_row']}, "
                                f"but the source's {e['source_split']} split has {len(rows)} rows; "
                                f"is it wanglab/kegg at the pinned revision?")
            picked.append({c: rows[e["source_row"]].get(c) for c in COLUMNS})
        out[split] = picked
    return out


def _csv_cell(value) -> str:
    if value is None:
        return ""  # pandas' na_rep
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)  # the loader decodes JSON cells back
    return str(value)


def render_csv(rows: list[dict]) -> bytes:
    """The bytes of `pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)` on Linux for
    string cells: pandas writes through Python's csv module with these settings (minimal quoting,
    doubled quotes, "\\n" line ends), so no pandas is needed to reproduce bio-mirage's files."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in COLUMNS])
    return buf.getvalue().encode("utf-8")


def render_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps({c: row[c] for c in COLUMNS}, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def check_md5s(rendered: dict[str, bytes], built: dict[str, list[dict]], manifest: dict,
               row_map: dict[str, list[dict]], label: str) -> None:
    """Every split's CSV bytes must match the manifest; one error lists every mismatch."""
    problems = []
    for split in SPLITS:
        want = manifest["splits"][split]
        got = md5_hex(rendered[split])
        if len(built[split]) != want["rows"]:
            problems.append(f"{want['file']}: {len(built[split])} rows, the manifest expects {want['rows']}")
        if got != want["md5"]:
            problems.append(f"{want['file']}: md5 mismatch: expected {want['md5']}, got {got}")
    if problems:
        # The row map's answer column says which rows disagree: a hint at a wrong revision or source.
        disagree = sum(str(r.get("answer", "")).strip().lower() != e["answer"].strip().lower()
                       for s in SPLITS for r, e in zip(built[s], row_map[s]))
        hint = (f"; {disagree} row(s) have an answer other than the row map's" if disagree else "")
        raise Md5MismatchError(f"{'; '.join(problems)} (source: {label}){hint}. The source is not "
                               f"{manifest['dataset']} at revision {manifest['revision']}, or it was modified; "
                               f"nothing was written")


# --- writing -----------------------------------------------------------------------------------------

def _existing_conflicts(out: Path, names: dict[str, str]) -> list[str]:
    """Files in `out` the loader would take for one of our splits besides the ones we write: the
    loader refuses a directory with two files for one split."""
    if not out.is_dir():
        return []
    ours = set(names.values())
    clashes = []
    for p in sorted(out.iterdir()):
        ext = next((e for e in EXTENSIONS if p.name.endswith(e)), None)  # the loader's naming rules
        if ext and p.is_file() and canonical_split(p.name[:-len(ext)]) in names and p.name not in ours:
            clashes.append(p.name)
    return clashes


def _check_round_trip(staging: Path, built: dict[str, list[dict]], fmt: str) -> None:
    """Read the staged files through the project's loader; every value must come back as it was."""
    from biopost.data.io import load_split_rows
    loaded = load_split_rows(str(staging), SPLITS)
    for split in SPLITS:
        if len(loaded[split]) != len(built[split]):
            raise DataError(f"{split}: the loader read {len(loaded[split])} rows back, {len(built[split])} were written")
        for i, ((row, _), want) in enumerate(zip(loaded[split], built[split]), 1):
            for c in COLUMNS:
                # a missing value is an empty cell in the published CSVs too: the only way to write it
                if row.get(c) != want[c] and not (fmt == "csv" and want[c] is None and row.get(c) == ""):
                    hint = " (pass --format jsonl, which keeps every value as it is)" if fmt == "csv" else ""
                    raise DataError(f"{split}_network_split.{fmt}: row {i}: field {c!r} would not load back as the "
                                    f"source value: {want[c]!r:.80} became {row.get(c)!r:.80}{hint}")


def write_split(out: str | Path, built: dict[str, list[dict]], rendered_csv: dict[str, bytes], fmt: str = "csv") -> dict[str, Path]:
    """Write the three files into `out`: staged in a hidden folder inside `out` (same filesystem),
    read back through the loader, then renamed into place one by one and the folder fsynced."""
    from biopost.files import ensure_dir, fsync_dir, output_error, write_bytes_atomic
    out = ensure_dir(Path(out))
    names = {s: f"{s}_network_split.{fmt}" for s in SPLITS}
    clashes = _existing_conflicts(out, names)
    if clashes:
        raise DataError(f"{out} already holds {', '.join(clashes)}, which the loader would read as the same split(s) "
                        f"as the files this writes; remove them or choose another --out")
    staging = out / f".kegg-network-split.{secrets.token_hex(4)}.tmp"
    try:
        staging.mkdir()
        for split in SPLITS:
            data = rendered_csv[split] if fmt == "csv" else render_jsonl(built[split])
            write_bytes_atomic(staging / names[split], data)
        _check_round_trip(staging, built, fmt)
        paths = {}
        for split in SPLITS:
            target = out / names[split]
            os.replace(staging / names[split], target)
            paths[split] = target
        fsync_dir(out)
        return paths
    except OSError as e:
        raise (output_error(e, out) or e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build(out: str | Path, source: str | Path | None = None, manifest_path: str | Path = MANIFEST,
          fmt: str = "csv", log=print) -> dict[str, Path]:
    """The whole command as a function: returns split -> written file. Raises DataError (and its
    Md5MismatchError / HubUnreachableError kinds) with one message saying what to fix."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    manifest = read_manifest(manifest_path)
    row_map = read_row_map(manifest["row_map"], manifest["row_map_md5"])
    rows, label = load_source(source, manifest["dataset"], manifest["revision"])
    built = select_rows(rows, row_map, label)
    rendered = {s: render_csv(built[s]) for s in SPLITS}
    check_md5s(rendered, built, manifest, row_map, label)
    paths = write_split(out, built, rendered, fmt)
    for split in SPLITS:
        log(f"{split:<9} {len(built[split]):>5} rows  md5 OK  -> {paths[split]}")
    return paths


# --- the command -------------------------------------------------------------------------------------

HELP = "write the published study's KEGG pathway-network split (train / id_test / ood_test) of wanglab/kegg"

EPILOG = f"""\
what it writes (in --out):
  train_network_split.csv     1,159 rows   training
  id_test_network_split.csv     145 rows   in-distribution test (the study's validation split)
  ood_test_network_split.csv    145 rows   held out: 9 pathway networks absent from training
Columns: {', '.join(COLUMNS)}.
The files are byte-identical to what bio-mirage's build_network_split.py writes, and are
md5-checked against its manifest before anything is written. Every stage's `--data_path DIR`
reads them as the splits train / id_test / ood_test.

where the rows come from:
  (default)       wanglab/kegg at the pinned revision, from the HuggingFace hub (or its cache)
  --source PATH   a local copy, for air-gapped clusters: a folder of wanglab/kegg's parquet
                  files (data/train-*.parquet, val-*, test-*), an HF cache directory (only the
                  pinned revision's snapshot is used), a save_to_disk folder, or one parquet
                  file with a 'split' column

caveat: the study selected checkpoints on id_test, so ID numbers on it are optimistic.
Split: mims-harvard/bio-mirage (MIT); data: wanglab/kegg (Apache-2.0). See docs/kegg_network_split.md.

examples:
  biopost data kegg-network-split --out data/kegg_network
  biopost data kegg-network-split --out data/kegg_network --source ~/.cache/huggingface/hub
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="biopost data kegg-network-split",
        description="Build the published study's ID/OOD split of wanglab/kegg: 1,159 train, 145 ID and\n"
                    "145 OOD rows, the OOD rows from 9 KEGG pathway networks held out of training.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--source", metavar="PATH", default=None,
                   help="a local copy of wanglab/kegg instead of the hub (see below)")
    p.add_argument("--format", choices=FORMATS, default="csv", dest="fmt",
                   help="csv (default): the published files, byte for byte; jsonl: one JSON object per "
                        "line (same rows; the md5 check is still made on the CSV rendering)")
    p.add_argument("--manifest", metavar="PATH", default=str(MANIFEST),
                   help="the manifest naming the dataset, revision, row map and md5s (default: the "
                        "shipped one; tests point this at a fixture)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        build(args.out, args.source, args.manifest, args.fmt)
    except UserError as e:  # DataError, OutputError: one line saying what to fix
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(ID_CAVEAT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
