"""`biopost data kegg-network-split`: the published KEGG pathway-network split, rebuilt and md5-checked.

The real build needs wanglab/kegg from the hub, which tests cannot reach; they run the same code
on a fixture in wanglab/kegg's schema (tests/fixtures/kegg_network_split/: an 18-row source, with
`reasoning` as a string like wanglab/kegg and as a struct like BioReason's raw JSON, its own row
map and manifests), laid out the ways `--source` accepts (parquet files, an HF hub cache, a
save_to_disk folder). The shipped row map and manifest are checked for what bio-mirage published.
"""
import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import bioreason.modality  # noqa: F401  (registers the kegg task where the entry point is not installed)
from bioreason import kegg_network_split as kns

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "kegg_network_split"
MANIFEST = FIXTURE / "manifest.json"
MANIFEST_STRUCT = FIXTURE / "manifest_struct.json"
FILES = {"train": "train_network_split.csv", "id_test": "id_test_network_split.csv",
         "ood_test": "ood_test_network_split.csv"}


def fixture_source(kind: str = "string") -> dict[str, list[dict]]:
    return json.loads((FIXTURE / f"source_{kind}.json").read_text(encoding="utf-8"))


def write_parquet(root: Path, source: dict[str, list[dict]]) -> Path:
    """The layout of the dataset's repository: data/{train,val,test}-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in source.items():
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def run(argv, capsys):
    rc = kns.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- the acceptance criteria --------------------------------------------------------------------

def test_writes_the_three_files_and_their_md5s_pass(tmp_path, capsys):
    src = write_parquet(tmp_path / "kegg", fixture_source())
    out = tmp_path / "out"
    rc, stdout, stderr = run(["--out", out, "--source", src, "--manifest", MANIFEST], capsys)
    assert rc == 0, stderr
    manifest = json.loads(MANIFEST.read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())  # no staging left behind
    for split, name in FILES.items():
        assert md5_file(out / name) == manifest["splits"][split]["md5"]
        assert f"{split:<9}" in stdout and "md5 OK" in stdout
    assert "optimistic" in stdout  # the ID-as-validation caveat is printed with every build


def test_one_perturbed_cell_fails_with_a_named_md5_error(tmp_path, capsys):
    source = fixture_source()
    seq = source["val"][1]["variant_sequence"]
    source["val"][1]["variant_sequence"] = ("C" if seq[0] != "C" else "G") + seq[1:]  # one base
    src = write_parquet(tmp_path / "kegg", source)
    out = tmp_path / "out"
    rc, _, stderr = run(["--out", out, "--source", src, "--manifest", MANIFEST], capsys)
    assert rc == 1
    expected = json.loads(MANIFEST.read_text())["splits"]["train"]["md5"]  # val row 1 is a train row
    assert stderr.startswith("error: train_network_split.csv: md5 mismatch: expected " + expected + ", got ")
    assert stderr.count("\n") == 1  # one line
    for other in ("id_test_network_split.csv", "ood_test_network_split.csv"):
        assert other not in stderr  # only the file that changed is named
    assert not out.exists() or not any(out.iterdir())  # nothing is written unless all three match
    with pytest.raises(kns.Md5MismatchError, match="got [0-9a-f]{32}"):
        kns.build(out, src, MANIFEST, log=lambda *_: None)


@pytest.mark.parametrize("kind,fmt", [("string", "csv"), ("struct", "csv"), ("struct", "jsonl"), ("string", "jsonl")])
def test_the_loader_round_trips_reasoning(tmp_path, capsys, kind, fmt):
    from biopost.data.examples import load_task_data
    from biopost.tasks import get_task
    source = fixture_source(kind)
    src = write_parquet(tmp_path / "kegg", source)
    out = tmp_path / "out"
    manifest = MANIFEST if kind == "string" else MANIFEST_STRUCT
    rc, _, stderr = run(["--out", out, "--source", src, "--manifest", manifest, "--format", fmt], capsys)
    assert rc == 0, stderr
    splits = ("train", "id_test", "ood_test")
    rows, reports = load_task_data(get_task("kegg"), str(out), splits, log=lambda *_: None)
    row_map = kns.read_row_map(FIXTURE / "network_split_to_wanglab_kegg.csv")
    for split in splits:
        assert reports[split].n_valid == len(row_map[split])
        for row, entry in zip(rows[split], row_map[split]):
            want = source[entry["source_split"]][entry["source_row"]]
            assert type(row["reasoning"]) is type(want["reasoning"])  # a struct stays a dict, a string a string
            assert row["reasoning"] == want["reasoning"]
            assert (row["question"], row["answer"]) == (want["question"], want["answer"])
            assert row["answer"] == entry["answer"]


# --- the published files ------------------------------------------------------------------------

def test_rendering_is_pandas_to_csv_byte_for_byte():
    """bio-mirage writes `pd.DataFrame(rows, columns=COLS).to_csv(path, index=False)`; the md5s
    of the real build can only match if the rendering is the same bytes (quotes, commas,
    newlines and non-ASCII text in the fixture's cells)."""
    pd = pytest.importorskip("pandas")
    source = fixture_source()
    built = kns.select_rows(source, kns.read_row_map(FIXTURE / "network_split_to_wanglab_kegg.csv"), "fixture")
    for split in kns.SPLITS:
        buf = io.StringIO()
        pd.DataFrame(built[split], columns=list(kns.COLUMNS)).to_csv(buf, index=False)
        assert kns.render_csv(built[split]) == buf.getvalue().encode("utf-8")


def test_the_shipped_row_map_is_the_published_split():
    manifest = kns.read_manifest()
    assert manifest["dataset"] == "wanglab/kegg"
    assert manifest["revision"] == "9f0ef941a362f0e308e11861ed82c36338e23586"  # build_network_split.py's REVISION
    assert {s: v["md5"] for s, v in manifest["splits"].items()} == {
        "train": "067c273308a0bba057a3c44ed24656ee", "id_test": "37c2708d3db3e82d1ce864253e391e59",
        "ood_test": "5edbf42b62d0ae8825382ca1fea39f0c"}
    row_map = kns.read_row_map(manifest["row_map"], manifest["row_map_md5"])
    assert {s: len(v) for s, v in row_map.items()} == {"train": 1159, "id_test": 145, "ood_test": 145}
    used = {"train": [], "val": [], "test": []}
    for entries in row_map.values():
        for e in entries:
            used[e["source_split"]].append(e["source_row"])
    # every row of wanglab/kegg (1,159 train / 144 val / 146 test) is used exactly once
    assert {s: sorted(v) for s, v in used.items()} == {s: list(range(n)) for s, n in
                                                        (("train", 1159), ("val", 144), ("test", 146))}
    provenance = json.loads(kns.MANIFEST.read_text())["provenance"]
    assert provenance["repository"] == "https://github.com/mims-harvard/bio-mirage" and "MIT" in provenance["licence"]


def test_an_edited_row_map_is_refused(tmp_path):
    for name in ("manifest.json", "network_split_to_wanglab_kegg.csv"):
        (tmp_path / name).write_bytes((FIXTURE / name).read_bytes())
    row_map = tmp_path / "network_split_to_wanglab_kegg.csv"
    row_map.write_text(row_map.read_text().replace("ood_test,0,train,2", "ood_test,0,train,9"))
    with pytest.raises(kns.Md5MismatchError, match="network_split_to_wanglab_kegg.csv: md5 mismatch"):
        kns.build(tmp_path / "out", write_parquet(tmp_path / "kegg", fixture_source()), tmp_path / "manifest.json")


# --- where the rows come from --------------------------------------------------------------------

def _fake_datasets(monkeypatch, error: Exception):
    calls = []

    def load_dataset(name, revision=None, **kw):
        calls.append((name, revision))
        raise error

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_an_unreachable_hub_says_so_and_suggests_source(tmp_path, capsys, monkeypatch):
    cause = ConnectionError("Couldn't reach 'wanglab/kegg' on the Hub (OfflineModeIsEnabled)")
    calls = _fake_datasets(monkeypatch, cause)
    rc, _, stderr = run(["--out", tmp_path / "out"], capsys)
    assert rc == 1
    assert calls == [("wanglab/kegg", "9f0ef941a362f0e308e11861ed82c36338e23586")]  # the pinned revision
    assert stderr.startswith("error: cannot reach the HuggingFace hub for wanglab/kegg at revision "
                             "9f0ef941a362f0e308e11861ed82c36338e23586")
    assert "--source" in stderr and stderr.count("\n") == 1


def test_a_hub_error_that_is_not_about_the_network_is_reported_as_it_is(tmp_path, monkeypatch):
    _fake_datasets(monkeypatch, ValueError("BuilderConfig 'x' not found"))
    with pytest.raises(kns.DataError, match="loading wanglab/kegg at revision 9f0ef94.* failed: ValueError") as e:
        kns.build(tmp_path / "out", log=lambda *_: None)
    assert not isinstance(e.value, kns.HubUnreachableError)


def test_an_hf_hub_cache_uses_the_pinned_snapshot_only(tmp_path, capsys):
    """~/.cache/huggingface/hub holds datasets--<owner>--<name>/snapshots/<revision>/data/*.parquet
    (and other datasets beside it); only the pinned revision of this dataset is read."""
    manifest = json.loads(MANIFEST.read_text())
    cache = tmp_path / "hub"
    repo = cache / "datasets--test--kegg-fixture" / "snapshots"
    write_parquet(repo / manifest["revision"], fixture_source())
    stale = fixture_source()
    stale["train"][0]["answer"] = "melanoma"
    write_parquet(repo / ("1" * 40), stale)                                   # another revision
    write_parquet(cache / "datasets--test--other" / "snapshots" / manifest["revision"], stale)  # another dataset
    rc, _, stderr = run(["--out", tmp_path / "out", "--source", cache, "--manifest", MANIFEST], capsys)
    assert rc == 0, stderr

    other = tmp_path / "hub2" / "datasets--test--kegg-fixture" / "snapshots"
    write_parquet(other / ("1" * 40), fixture_source())
    with pytest.raises(kns.DataError, match="without revision 0{40} \\(it has snapshot\\(s\\) 1{40}\\)"):
        kns.build(tmp_path / "out2", tmp_path / "hub2", MANIFEST)


def test_a_save_to_disk_folder_and_a_datasets_cache(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    source = fixture_source("struct")
    saved = tmp_path / "saved"
    datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in source.items()}).save_to_disk(str(saved))
    rc, _, stderr = run(["--out", tmp_path / "out", "--source", saved, "--manifest", MANIFEST_STRUCT], capsys)
    assert rc == 0, stderr
    # ~/.cache/huggingface/datasets: <builder>/<config>/<version>/<hash>/<builder>-<split>.arrow
    data = write_parquet(tmp_path / "kegg", source) / "data"
    datasets.load_dataset("parquet", data_files={s: str(data / f"{s}-00000-of-00001.parquet") for s in source},
                          cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").rglob("*-val.arrow"))
    rc, _, stderr = run(["--out", tmp_path / "out2", "--source", tmp_path / "cache", "--manifest", MANIFEST_STRUCT], capsys)
    assert rc == 0, stderr


def test_a_source_without_a_split_or_a_column_is_named(tmp_path):
    source = fixture_source()
    del source["test"]
    with pytest.raises(kns.DataError, match="no parquet/arrow file for wanglab/kegg split\\(s\\) test"):
        kns.build(tmp_path / "out", write_parquet(tmp_path / "a", source), MANIFEST)
    source = fixture_source()
    for rows in source.values():
        for row in rows:
            del row["reasoning"]
    with pytest.raises(kns.DataError, match="has no column\\(s\\) reasoning"):
        kns.build(tmp_path / "out", write_parquet(tmp_path / "b", source), MANIFEST)
    with pytest.raises(kns.DataError, match="no such file or directory"):
        kns.build(tmp_path / "out", tmp_path / "missing", MANIFEST)


# --- writing ---------------------------------------------------------------------------------------

def _manifest_for(tmp_path: Path, source: dict) -> Path:
    """A manifest whose md5s are those of `source` as rendered (for sources the fixture lacks)."""
    row_map_path = FIXTURE / "network_split_to_wanglab_kegg.csv"
    built = kns.select_rows(source, kns.read_row_map(row_map_path), "test")
    manifest = json.loads(MANIFEST.read_text())
    manifest["row_map"]["file"] = str(row_map_path)
    for split in kns.SPLITS:
        manifest["splits"][split]["md5"] = kns.md5_hex(kns.render_csv(built[split]))
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_a_csv_cell_the_loader_would_misread_is_refused_and_jsonl_keeps_it(tmp_path, capsys):
    from biopost.data.io import load_split_rows
    source = copy.deepcopy(fixture_source())
    source["train"][1]["reasoning"] = '["a list?", "no: a string"]'  # a CSV cell that looks like JSON
    src = write_parquet(tmp_path / "kegg", source)
    manifest = _manifest_for(tmp_path, source)
    rc, _, stderr = run(["--out", tmp_path / "csv", "--source", src, "--manifest", manifest], capsys)
    assert rc == 1 and "field 'reasoning' would not load back" in stderr and "--format jsonl" in stderr
    assert not any((tmp_path / "csv").iterdir())
    rc, _, stderr = run(["--out", tmp_path / "jsonl", "--source", src, "--manifest", manifest, "--format", "jsonl"], capsys)
    assert rc == 0, stderr
    row = load_split_rows(str(tmp_path / "jsonl"), ("train",))["train"][0][0]  # network row 0 = source train row 1
    assert row["reasoning"] == '["a list?", "no: a string"]'


def test_another_file_for_a_split_in_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "id_test.jsonl").write_text("{}\n")
    src = write_parquet(tmp_path / "kegg", fixture_source())
    rc, _, stderr = run(["--out", out, "--source", src, "--manifest", MANIFEST], capsys)
    assert rc == 1 and "already holds id_test.jsonl" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["id_test.jsonl"]
    # a rebuild over its own earlier output is fine, and the files get the umask's mode
    (out / "id_test.jsonl").unlink()
    for _ in range(2):
        assert run(["--out", out, "--source", src, "--manifest", MANIFEST], capsys)[0] == 0
    mask = os.umask(0)
    os.umask(mask)
    assert {(p.stat().st_mode & 0o777) for p in out.iterdir()} == {0o666 & ~mask}


# --- the command line ------------------------------------------------------------------------------

def test_help_describes_the_split():
    text = kns.parser().format_help()
    for needle in ("biopost data kegg-network-split", "--out DIR", "--source PATH", "1,159", "id_test",
                   "ood_test", "optimistic", "HF cache", "MIT", "Apache-2.0"):
        assert needle in text


def test_biopost_data_dispatches_to_it(tmp_path):
    """Through the console script's code path in a fresh interpreter: the command is found by
    entry-point discovery (bioreason.modality), not by an import in this test."""
    cli = [sys.executable, "-m", "biopost.cli", "data"]
    listing = subprocess.run(cli + ["--help"], capture_output=True, text=True, timeout=120)
    if "kegg-network-split" not in listing.stdout:
        pytest.skip("`biopost data --help` does not list kegg-network-split (BioReason's entry point not "
                    "installed, or the data group does not dispatch to registered commands yet)")
    src = write_parquet(tmp_path / "kegg", fixture_source())
    proc = subprocess.run(cli + ["kegg-network-split", "--out", str(tmp_path / "out"), "--source", str(src),
                                 "--manifest", str(MANIFEST)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES.values())
    proc = subprocess.run(cli + ["kegg-network-split", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: biopost data kegg-network-split" in proc.stdout
