"""The Gene Ontology as the CAFA evaluator reads it, held as flat integer arrays.

Everything GO-specific that the metrics, the IA estimator and the GRPO reward share: which terms
exist, which namespace each is in, what an `alt_id` stands for, which ids are obsolete, and the
ancestor closure used for propagation. The conventions are cafaeval 1.3.0's (parser.py,
graph.py), written down in docs/go_metrics.md:

- terms are the `[Term]` stanzas with a namespace other than `external` that are not obsolete
  (`is_obsolete` with any value); `[Typedef]` stanzas are not terms;
- edges are `is_a` and `relationship: part_of` only (not `regulates` and its kin), and only to a
  parent that is an active term of the same namespace; GO has no edge across namespaces, and
  an edge to an obsolete or unknown term is dropped, as cafaeval drops it;
- an `alt_id` stands for every active term that lists it (GO 2022-07-01: always exactly one);
- propagation adds every ancestor over those edges, the term itself included.

Loading goes through obonet (5-6 s for go-basic on a busy 2-core machine), so the parsed
arrays are cached under `$BIOPOST_CACHE_DIR/go/`, keyed by the sha256 of the OBO file's bytes:
the second load of the same file takes a fraction of a second. The cache is never written
beside the data (a mistake of the published code) and a corrupt cache entry is rebuilt.

Terms are numbered namespace by namespace (biological_process, molecular_function,
cellular_component, then any other namespace in name order), sorted by id inside each, so a
namespace is one contiguous index range and a global index minus the range's start is the
term's index inside its namespace.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biopost.errors import UserError

log = logging.getLogger(__name__)

NAMESPACES = ("biological_process", "molecular_function", "cellular_component")
# Short names used in reports and by the reward's per-aspect mode.
ASPECT_OF = {"biological_process": "BP", "molecular_function": "MF", "cellular_component": "CC"}
NAMESPACE_OF_ASPECT = {v: k for k, v in ASPECT_OF.items()}
# GAF / gene2go aspect letters.
NAMESPACE_OF_LETTER = {"P": "biological_process", "F": "molecular_function", "C": "cellular_component"}
EDGE_TYPES = ("is_a", "part_of")
_CACHE_VERSION = "1"
_RESOURCES = Path(__file__).resolve().parent / "resources" / "go"
DEFAULT_OBO = _RESOURCES / "go-basic.obo.gz"


class OntologyError(UserError, ValueError):
    """An OBO file that cannot be read as an ontology (missing, not OBO, cyclic)."""


@dataclass(frozen=True, eq=False)
class Ontology:
    """Active GO terms and their ancestor closure. Build with `load_ontology`.

    `anc_indptr`/`anc` is a CSR row per term listing its ancestors *and itself*, sorted;
    `parent_indptr`/`parents` lists its direct parents over `EDGE_TYPES` (the IA estimator
    needs these). Both are int32/int64 numpy arrays, so propagating a set of terms is one
    gather plus one `np.unique`.
    """
    source: str
    data_version: str | None
    ids: tuple[str, ...]
    namespaces: tuple[str, ...]
    ns_start: np.ndarray            # len(namespaces) + 1 offsets into ids
    ns_of: np.ndarray               # namespace number of each term
    parent_indptr: np.ndarray
    parents: np.ndarray
    anc_indptr: np.ndarray
    anc: np.ndarray
    alt: dict                       # alt id -> tuple of term indices
    obsolete: frozenset
    index: dict = field(default_factory=dict)  # term id -> index, filled by __post_init__

    def __post_init__(self):
        if not self.index:
            self.index.update((t, i) for i, t in enumerate(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def namespace_range(self, namespace: str) -> tuple[int, int]:
        """(start, stop) of the namespace's global indices."""
        k = self.namespaces.index(namespace)
        return int(self.ns_start[k]), int(self.ns_start[k + 1])

    def namespace(self, term_index: int) -> str:
        return self.namespaces[int(self.ns_of[term_index])]

    def resolve(self, go_id: str) -> tuple[tuple[int, ...], str]:
        """(term indices, status) of one id as written in a file.

        status is "term" (an active term), "alt" (an alt_id, replaced by the term(s) listing it),
        "obsolete" or "unknown"; the last two resolve to no term, as cafaeval drops them.
        """
        i = self.index.get(go_id)
        if i is not None:
            return (i,), "term"
        alt = self.alt.get(go_id)
        if alt is not None:
            return alt, "alt"
        return (), "obsolete" if go_id in self.obsolete else "unknown"

    def propagate(self, term_indices) -> np.ndarray:
        """Sorted unique indices of the terms and all their ancestors (over is_a and part_of)."""
        idx = np.asarray(term_indices, dtype=np.int64)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.size == 1:
            i = int(idx[0])
            return self.anc[self.anc_indptr[i]:self.anc_indptr[i + 1]].astype(np.int64)
        _, ancestors = gather_rows(self.anc_indptr, self.anc, idx)
        return np.unique(ancestors)

    def expand(self, term_indices) -> tuple[np.ndarray, np.ndarray]:
        """(position, ancestor) pairs: each input position repeated once per ancestor of its term
        (itself included). Propagating per-entry values (scores, protein ids) to ancestors is
        `values[position]` beside `ancestor`."""
        return gather_rows(self.anc_indptr, self.anc, np.asarray(term_indices, dtype=np.int64))


def gather_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CSR rows `rows`: (which input position each output came from, the values)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows].astype(np.int64)
    lens = indptr[rows + 1].astype(np.int64) - starts
    total = int(lens.sum())
    src = np.repeat(np.arange(rows.size, dtype=np.int64), lens)
    # position inside each row = running index - start of that row's output block
    block_start = np.cumsum(lens) - lens
    offsets = np.arange(total, dtype=np.int64) - np.repeat(block_start - starts, lens)
    return src, indices[offsets]


# --- loading --------------------------------------------------------------------------------------

def open_text(path) -> io.TextIOBase:
    """Open a plain or gzipped text file (told apart by its first bytes, not its name)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as e:
        raise OntologyError(f"cannot read {path}: {e.strerror or e}") from None
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def load_ontology(path=None, *, cache: bool = True) -> Ontology:
    """The ontology in the OBO file `path` (plain or gzipped; default: the packaged go-basic
    2022-07-01), from the cache when this exact file was parsed before."""
    path = Path(path) if path is not None else DEFAULT_OBO
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OntologyError(f"cannot read OBO file {path}: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    cache_file = _cache_file(digest) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            return _from_npz(cache_file, str(path))
        except Exception as e:  # a truncated or foreign cache entry: rebuild it
            log.warning("ignoring unreadable GO cache %s (%s)", cache_file, e)
    onto = _parse(path, data)
    if cache_file is not None:
        _to_npz(onto, cache_file)
    return onto


def _cache_file(digest: str) -> Path | None:
    try:
        from biopost.paths import cache_root
    except ImportError:  # pragma: no cover - biopost is a dependency
        return None
    return cache_root() / "go" / f"ontology-v{_CACHE_VERSION}-{digest[:32]}.npz"


def _parse(path: Path, data: bytes) -> Ontology:
    import obonet  # only when parsing: a cached ontology needs neither obonet nor networkx

    text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    try:
        graph = obonet.read_obo(io.StringIO(text.decode("utf-8")), ignore_obsolete=False)
    except UnicodeDecodeError as e:
        raise OntologyError(f"{path} is not UTF-8 text: {e}") from None
    except Exception as e:
        raise OntologyError(f"{path} is not a readable OBO file: {type(e).__name__}: {e}") from None

    active: dict[str, list[str]] = {}
    nodes = {}
    obsolete = set()
    for term, d in graph.nodes(data=True):
        ns = d.get("namespace")
        if "is_obsolete" in d:
            obsolete.add(term)
            continue
        if ns is None or ns == "external":
            continue
        active.setdefault(ns, []).append(term)
        nodes[term] = d
    if not active:
        raise OntologyError(f"{path} has no active [Term] with a namespace: not an OBO ontology?")
    namespaces = tuple([ns for ns in NAMESPACES if ns in active] +
                       sorted(ns for ns in active if ns not in NAMESPACES))
    ids: list[str] = []
    ns_start = [0]
    ns_of: list[int] = []
    for k, ns in enumerate(namespaces):
        terms = sorted(active[ns])
        ids.extend(terms)
        ns_of.extend([k] * len(terms))
        ns_start.append(len(ids))
    index = {t: i for i, t in enumerate(ids)}
    ns_arr = np.asarray(ns_of, dtype=np.int8)

    parent_lists: list[list[int]] = []
    alt: dict[str, list[int]] = {}
    for i, term in enumerate(ids):
        d = nodes[term]
        targets = list(d.get("is_a", []))
        for rel in d.get("relationship", []):
            parts = rel.split()
            if len(parts) >= 2 and parts[0] == "part_of":
                targets.append(parts[1])
        ps = sorted({index[t] for t in targets if t in index and ns_arr[index[t]] == ns_arr[i]})
        parent_lists.append(ps)
        for a in d.get("alt_id", []):
            alt.setdefault(a, []).append(i)
    parent_indptr, parents = _csr(parent_lists)
    anc_indptr, anc = _closure(parent_lists, ids, path)
    return Ontology(source=str(path), data_version=graph.graph.get("data-version"), ids=tuple(ids),
                    namespaces=namespaces, ns_start=np.asarray(ns_start, dtype=np.int64), ns_of=ns_arr,
                    parent_indptr=parent_indptr, parents=parents, anc_indptr=anc_indptr, anc=anc,
                    alt={a: tuple(v) for a, v in alt.items()}, obsolete=frozenset(obsolete), index=index)


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in lists])
    flat = np.fromiter((j for x in lists for j in x), dtype=np.int32, count=int(indptr[-1]))
    return indptr, flat


def _closure(parent_lists: list[list[int]], ids: list[str], path) -> tuple[np.ndarray, np.ndarray]:
    """Ancestors-or-self of every term, in topological order (parents first, Kahn's algorithm)."""
    n = len(parent_lists)
    children: list[list[int]] = [[] for _ in range(n)]
    pending = np.zeros(n, dtype=np.int64)
    for i, ps in enumerate(parent_lists):
        pending[i] = len(ps)
        for p in ps:
            children[p].append(i)
    order = [i for i in range(n) if pending[i] == 0]
    anc: list = [None] * n
    head = 0
    while head < len(order):
        i = order[head]
        head += 1
        ps = parent_lists[i]
        if not ps:
            anc[i] = np.array([i], dtype=np.int32)
        elif len(ps) == 1:
            anc[i] = np.sort(np.append(anc[ps[0]], np.int32(i)))
        else:
            anc[i] = np.unique(np.concatenate([anc[p] for p in ps] + [np.array([i], dtype=np.int32)]))
        for c in children[i]:
            pending[c] -= 1
            if pending[c] == 0:
                order.append(c)
    if len(order) != n:
        stuck = next(ids[i] for i in range(n) if anc[i] is None)
        raise OntologyError(f"{path}: the is_a/part_of graph has a cycle (through {stuck})")
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([a.size for a in anc])
    return indptr, np.concatenate(anc).astype(np.int32)


def _to_npz(onto: Ontology, target: Path) -> None:
    from biopost.files import write_bytes_atomic

    alt_ids = sorted(onto.alt)
    alt_indptr, alt_terms = _csr([list(onto.alt[a]) for a in alt_ids])
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(onto.ids), namespaces=np.asarray(onto.namespaces),
             ns_start=onto.ns_start, ns_of=onto.ns_of, parent_indptr=onto.parent_indptr,
             parents=onto.parents, anc_indptr=onto.anc_indptr, anc=onto.anc,
             alt_ids=np.asarray(alt_ids, dtype=str), alt_indptr=alt_indptr, alt_terms=alt_terms,
             obsolete=np.asarray(sorted(onto.obsolete), dtype=str),
             data_version=np.asarray(onto.data_version or ""))
    try:
        write_bytes_atomic(target, buf.getvalue())
    except UserError as e:  # an unwritable cache costs the next run 6 s, nothing more
        log.warning("GO ontology cache not written: %s", e)


def _from_npz(cache_file: Path, source: str) -> Ontology:
    with np.load(cache_file, allow_pickle=False) as z:
        alt_ids = z["alt_ids"].tolist()
        alt_indptr, alt_terms = z["alt_indptr"], z["alt_terms"].tolist()
        alt = {a: tuple(alt_terms[alt_indptr[k]:alt_indptr[k + 1]]) for k, a in enumerate(alt_ids)}
        version = str(z["data_version"])
        return Ontology(source=source, data_version=version or None, ids=tuple(z["ids"].tolist()),
                        namespaces=tuple(z["namespaces"].tolist()), ns_start=z["ns_start"],
                        ns_of=z["ns_of"], parent_indptr=z["parent_indptr"], parents=z["parents"],
                        anc_indptr=z["anc_indptr"], anc=z["anc"], alt=alt,
                        obsolete=frozenset(z["obsolete"].tolist()))
