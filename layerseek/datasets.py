"""Collections: the loaders of the real benchmark layouts, of ground-truth files and of plain
folders. `eval` measures on them; `index` learns from them (whitening, MOF vocabularies), so
they live here and not in `eval`. Images that are missing are dropped from the lists and the
ground truth, and the loader says how many."""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LayerseekError, lookup, plural


@dataclass
class Query:
    path: Path
    bbox: tuple[float, float, float, float] | None = None
    positives: list[int] = field(default_factory=list)  # database indices
    junk: list[int] = field(default_factory=list)
    hard: list[int] = field(default_factory=list)  # revisited protocol only (positives = easy)
    db_index: int | None = None  # the query's own database entry, never counted as a match
    # UKBench: the query's own entry, left in its ranking (N-S counts it) but never a positive of mAP
    self_index: int | None = None
    rotate: int = 0  # degrees clockwise that make the stored image upright


@dataclass
class Dataset:
    name: str
    protocol: str  # "map" | "oxford" | "revisited" | "smvs" | "ukbench" | "holidays" | "category"
    database: list[Path]
    queries: list[Query]
    dropped_db: int = 0
    dropped_queries: int = 0
    note: str = ""
    rotations: dict[str, int] = field(default_factory=dict)  # file name -> degrees clockwise

    def apply_rotations(self, turns: dict[str, int]) -> None:
        """Turn the listed files (name -> degrees clockwise) upright, queries included."""
        self.rotations = dict(turns)
        for q in self.queries:
            q.rotate = self.rotations.get(q.path.name, 0)

    def describe(self) -> str:
        s = (f"{self.name}: {plural(len(self.database), 'database image')}, "
             f"{plural(len(self.queries), 'query', 'queries')}")
        if self.dropped_db or self.dropped_queries:
            s += (f" (restricted to the images present: {plural(self.dropped_db, 'database image')} and "
                  f"{plural(self.dropped_queries, 'query', 'queries')} of the ground truth are missing)")
        return s


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise LayerseekError(f"{path}: {what} not found")
    return path


def load_revisited(gnd_file: str | Path, image_dir: str | Path, name: str | None = None, ext: str = ".jpg") -> Dataset:
    """Revisited Oxford / Paris (Radenović et al., CVPR 2018): `gnd_r*.pkl` with imlist, qimlist
    and per query bbx, easy, hard, junk; queries are cropped to bbx. Easy/Medium/Hard are chosen
    at scoring time (positives = easy here, `hard` kept apart)."""
    gnd_file, image_dir = Path(gnd_file), _need_dir(Path(image_dir), "image folder")
    if not gnd_file.is_file():
        raise LayerseekError(f"{gnd_file}: ground-truth file not found")
    with open(gnd_file, "rb") as f:
        cfg = pickle.load(f)
    present = [i for i, n in enumerate(cfg["imlist"]) if (image_dir / f"{n}{ext}").is_file()]
    remap = {old: new for new, old in enumerate(present)}
    database = [image_dir / f"{cfg['imlist'][i]}{ext}" for i in present]
    queries, dropped_q = [], 0
    for qname, g in zip(cfg["qimlist"], cfg["gnd"]):
        qpath = image_dir / f"{qname}{ext}"
        if not qpath.is_file():
            dropped_q += 1
            continue

        def keep(ids):
            return sorted(remap[i] for i in ids if i in remap)

        queries.append(Query(qpath, tuple(float(v) for v in g["bbx"]), keep(g["easy"]), keep(g["junk"]), keep(g["hard"])))
    return Dataset(name or gnd_file.stem.replace("gnd_", ""), "revisited", database, queries,
                   dropped_db=len(cfg["imlist"]) - len(present), dropped_queries=dropped_q)


def load_smvs(root: str | Path, reference: str = "Reference", all_views: bool = False) -> Dataset:
    """Stanford Mobile Visual Search style: `Reference/NNN.jpg` clean images and query folders
    (`Canon/`, `Droid/`, ...) with the same file name for the same object.

    all_views=False: database = the references, each photo's relevant image its reference.
    all_views=True: database = every image; each photo's relevant images are the other views of
    the same object (its reference included), the photo itself excluded."""
    root = _need_dir(Path(root), "SMVS folder")
    ref_dir = _need_dir(root / reference, "reference folder")
    refs = sorted(p for p in ref_dir.iterdir() if p.is_file())
    query_dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name != reference)
    photos = [p for d in query_dirs for p in sorted(d.iterdir()) if p.is_file()]
    if all_views:
        database = refs + photos
        by_name: dict[str, list[int]] = {}
        for i, p in enumerate(database):
            by_name.setdefault(p.stem, []).append(i)
        queries = []
        for i, p in enumerate(photos, start=len(refs)):
            queries.append(Query(p, positives=[j for j in by_name[p.stem] if j != i], db_index=i))
        return Dataset("smvs-all", "smvs", database, queries)
    ref_index = {p.stem: i for i, p in enumerate(refs)}
    queries, dropped = [], 0
    for p in photos:
        if p.stem not in ref_index:
            dropped += 1
            continue
        queries.append(Query(p, positives=[ref_index[p.stem]]))
    return Dataset("smvs", "smvs", refs, queries, dropped_queries=dropped)


def _image_files(folder: Path) -> list[Path]:
    from .images import is_image_name

    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p))


def read_rotations(path: str | Path) -> dict[str, int]:
    """A list of `<file name> <degrees clockwise>` lines (blank lines and # comments skipped),
    e.g. the turns that make the sideways-stored INRIA Holidays images upright."""
    path = Path(path)
    if not path.is_file():
        raise LayerseekError(f"{path}: rotation list not found")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            name, deg = parts[0], int(float(parts[1]))
        except (IndexError, ValueError):
            raise LayerseekError(f"{path}:{n}: expected '<file name> <degrees>', got {line!r}") from None
        if deg % 90:
            raise LayerseekError(f"{path}:{n}: rotation {deg} is not a multiple of 90")
        out[Path(name).name] = deg % 360
    return out


def load_holidays(root: str | Path, rotations: str | Path | None = None, name: str = "holidays") -> Dataset:
    """INRIA Holidays (Jégou et al., ECCV 2008): `NNNNNN.jpg`, group = id // 100, the group's
    lowest id is its query. Every image is in the database; a query's positives are the other
    images of its group and the query itself is never counted (Holidays convention).
    `rotations`: a list of `<file> <degrees>` that makes the sideways-stored images upright."""
    root = _need_dir(Path(root), "Holidays folder")
    files = [p for p in _image_files(root) if p.stem.isdigit()]
    if not files:
        raise LayerseekError(f"{root}: no Holidays images (NNNNNN.jpg) found")
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(files):
        groups.setdefault(int(p.stem) // 100, []).append(i)
    queries = []
    for g, members in sorted(groups.items()):
        qi = min(members, key=lambda i: int(files[i].stem))
        queries.append(Query(files[qi], positives=[i for i in members if i != qi], db_index=qi))
    ds = Dataset(name, "holidays", files, queries)
    if rotations:
        ds.apply_rotations(read_rotations(rotations))
    return ds


def load_ukbench(root: str | Path, name: str = "ukbench") -> Dataset:
    """UKBench (Nistér & Stewénius, CVPR 2006): `ukbenchNNNNN.jpg`, groups of 4 consecutive
    numbers. Every image is a query against all; positives are its group, itself included, as the
    N-S score counts the query (max 4); the secondary mAP leaves the query out."""
    root = _need_dir(Path(root), "UKBench folder")
    files = [p for p in _image_files(root) if p.stem.startswith("ukbench") and p.stem[7:].isdigit()]
    if not files:
        raise LayerseekError(f"{root}: no UKBench images (ukbenchNNNNN.jpg) found")
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(files):
        groups.setdefault(int(p.stem[7:]) // 4, []).append(i)
    queries = [Query(p, positives=groups[int(p.stem[7:]) // 4], self_index=i) for i, p in enumerate(files)]
    return Dataset(name, "ukbench", files, queries)


def load_corel(root: str | Path, per_class: int = 100, name: str = "corel1k") -> Dataset:
    """Corel-1k / Wang SIMPLIcity: `N.jpg`, class = id // per_class. Category-level: every image a
    query, relevant = the rest of its class. Keep apart from instance-level numbers."""
    root = _need_dir(Path(root), "Corel folder")
    files = sorted((p for p in _image_files(root) if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise LayerseekError(f"{root}: no Corel images (N.jpg) found")
    cls: dict[int, list[int]] = {}
    for i, p in enumerate(files):
        cls.setdefault(int(p.stem) // per_class, []).append(i)
    queries = [Query(p, positives=[j for j in cls[int(p.stem) // per_class] if j != i], db_index=i)
               for i, p in enumerate(files)]
    return Dataset(name, "category", files, queries)


def load_oxford_classic(gt_dir: str | Path, image_dir: str | Path, name: str = "oxford5k") -> Dataset:
    """Oxford5k / Paris6k with the original ground truth (Philbin et al., CVPR 2007/2008):
    `<landmark>_<n>_query.txt` holds `[oxc1_]<image> x1 y1 x2 y2`, and `_good`, `_ok`, `_junk`
    list image names. Positives = good + ok, junk ignored, queries cropped to their box. The
    database is every image under `image_dir` (Paris6k's per-landmark folders included)."""
    gt_dir, image_dir = _need_dir(Path(gt_dir), "ground-truth folder"), _need_dir(Path(image_dir), "image folder")
    qfiles = sorted(gt_dir.glob("*_query.txt"))
    if not qfiles:
        raise LayerseekError(f"{gt_dir}: no *_query.txt ground-truth files")
    database = _image_files(image_dir)
    index = {p.stem: i for i, p in enumerate(database)}
    named: set[str] = set()
    queries, dropped_q = [], 0
    for qf in qfiles:
        parts = qf.read_text().split()
        if len(parts) != 5:
            raise LayerseekError(f"{qf}: expected '<image> x1 y1 x2 y2', got {' '.join(parts)!r}")
        qname = parts[0].removeprefix("oxc1_")
        stem = qf.name[: -len("_query.txt")]
        lists = {}
        for kind in ("good", "ok", "junk"):
            f = gt_dir / f"{stem}_{kind}.txt"
            lists[kind] = f.read_text().split() if f.is_file() else []
            named.update(lists[kind])
        named.add(qname)
        if qname not in index:
            dropped_q += 1
            continue
        pos = sorted({index[n] for n in lists["good"] + lists["ok"] if n in index})
        junk = sorted({index[n] for n in lists["junk"] if n in index})
        queries.append(Query(database[index[qname]], tuple(float(v) for v in parts[1:]), pos, junk))
    return Dataset(name, "oxford", database, queries, dropped_db=len(named - set(index)), dropped_queries=dropped_q)


def load_ground_truth_file(path: str | Path) -> Dataset:
    """The generic ground-truth file for any collection:

        {"root": ".", "database": ["a.jpg", ...],
         "queries": {"q.jpg": {"relevant": ["a.jpg"], "junk": [...], "bbox": [x1, y1, x2, y2]}}}

    `junk` and `bbox` are optional; paths are relative to the file's folder, or to `root` (itself
    relative to the file's folder). A query that is also in the database is never counted as its
    own match. Missing images are dropped from the lists and the ground truth, and counted."""
    import json

    path = Path(path)
    if not path.is_file():
        raise LayerseekError(f"{path}: ground-truth file not found")
    try:
        spec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LayerseekError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("database"), list) or not isinstance(spec.get("queries"), dict):
        raise LayerseekError(f"{path}: expected an object with a 'database' list and a 'queries' object")
    base = (path.parent / spec.get("root", ".")).resolve()
    names = [str(n) for n in spec["database"]]
    if len(set(names)) != len(names):
        raise LayerseekError(f"{path}: the database lists an image twice")
    present = [n for n in names if (base / n).is_file()]
    index = {n: i for i, n in enumerate(present)}
    queries, dropped_q = [], 0
    for qname, g in spec["queries"].items():
        if not isinstance(g, dict) or not isinstance(g.get("relevant"), list):
            raise LayerseekError(f"{path}: query {qname!r} needs a 'relevant' list")
        if not (base / qname).is_file():
            dropped_q += 1
            continue
        bbox = g.get("bbox")
        if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4):
            raise LayerseekError(f"{path}: query {qname!r}: bbox must be [x1, y1, x2, y2]")
        unknown = [n for n in g["relevant"] + g.get("junk", []) if n not in names]
        if unknown:
            raise LayerseekError(f"{path}: query {qname!r} names images not in the database: {unknown[:3]}")
        queries.append(Query(base / qname, tuple(float(v) for v in bbox) if bbox else None,
                             sorted({index[n] for n in g["relevant"] if n in index}),
                             sorted({index[n] for n in g.get("junk", []) if n in index}),
                             db_index=index.get(qname)))
    return Dataset(path.stem, "map", [base / n for n in present], queries,
                   dropped_db=len(names) - len(present), dropped_queries=dropped_q)


def shared_data_dir() -> Path:
    """../shared/data beside the repository, or $LAYERSEEK_DATA."""
    import os

    env = os.environ.get("LAYERSEEK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _rparis6k_subset(root: Path | None = None) -> Dataset:
    d = root or shared_data_dir()
    ds = load_revisited(d / "gnd" / "gnd_rparis6k.pkl", d / "paris6k-subset" / "jpg", name="rparis6k-subset")
    ds.note = "RParis6k restricted to the images present in paris6k-subset"
    return ds


def _need_root(name: str, root: Path | None, layout: str) -> Path:
    if root is None:
        raise LayerseekError(f"{name} is not in ../shared/data: give its folder with --root ({layout})")
    return root


def _rparis6k(root: Path | None = None) -> Dataset:
    d = _need_root("rparis6k", root, "gnd_rparis6k.pkl beside a jpg/ folder")
    return load_revisited(d / "gnd_rparis6k.pkl", d / "jpg", name="rparis6k")


def _roxford5k(root: Path | None = None) -> Dataset:
    d = _need_root("roxford5k", root, "gnd_roxford5k.pkl beside a jpg/ folder")
    return load_revisited(d / "gnd_roxford5k.pkl", d / "jpg", name="roxford5k")


def _classic(name: str):
    def load(root: Path | None = None) -> Dataset:
        d = _need_root(name, root, "gt_files/ with *_query.txt, and jpg/")
        return load_oxford_classic(d / "gt_files", d / "jpg", name=name)
    return load


#: name -> loader(root or None) for `layerseek eval DATASET`; the full classic benchmarks are not
#: in ../shared/data and need --root.
DATASETS = {
    "smvs": lambda root=None: load_smvs(root or shared_data_dir() / "smvs-dvd-covers"),
    "smvs-all": lambda root=None: load_smvs(root or shared_data_dir() / "smvs-dvd-covers", all_views=True),
    "rparis6k-subset": _rparis6k_subset,
    "corel1k": lambda root=None: load_corel(root or shared_data_dir() / "corel1k" / "jpg"),
    "holidays": lambda root=None: load_holidays(_need_root("holidays", root, "the NNNNNN.jpg images")),
    "ukbench": lambda root=None: load_ukbench(_need_root("ukbench", root, "the ukbenchNNNNN.jpg images")),
    "oxford5k": _classic("oxford5k"),
    "paris6k": _classic("paris6k"),
    "roxford5k": _roxford5k,
    "rparis6k": _rparis6k,
}


#: the collections of ../shared/data, one name per set of photos: `others` learns on them
SHARED = ("smvs", "rparis6k-subset", "corel1k")
#: collections that hold another's photos again
SAME_PHOTOS = {"smvs-all": "smvs"}


def training_collections(train_on: str, searched: str | None = None) -> list[str]:
    """The collections a `--train-on` names: one (a dataset name, ground-truth file or folder),
    several separated by commas, or `others`: every shared collection but the one `searched`
    (and but any that holds its photos)."""
    if train_on == "others":
        kept = SAME_PHOTOS.get(searched, searched)
        return [name for name in SHARED if name != kept]
    if Path(train_on).expanduser().exists():  # one folder or file, whatever its name holds
        return [train_on]
    names = [n.strip() for n in train_on.split(",") if n.strip()]
    if not names:
        raise LayerseekError(f"--train-on {train_on!r}: name a collection")
    return names


def load_folder(folder: str | Path) -> Dataset:
    """Every image under a folder (recursively) as a database without queries: a collection to
    learn from (whitening, vocabularies), not to evaluate on."""
    folder = _need_dir(Path(folder).expanduser(), "image folder")
    images = _image_files(folder)
    if not images:
        raise LayerseekError(f"{folder}: no image files in this folder")
    return Dataset(folder.name, "none", images, [])


def distractor_photos(folder: str | Path, n: int) -> list[Path]:
    """The first `n` image files under `folder` in a fixed shuffled order (seed 0): real photos of
    other kinds to mix into a benchmark's database (`../shared/tools/distractors.py` assembles
    them; the benches of mixed libraries read them)."""
    import random

    if not n:
        return []
    files = _image_files(_need_dir(Path(folder).expanduser(), "distractor folder"))
    random.Random(0).shuffle(files)
    if len(files) < n:
        raise LayerseekError(f"{folder}: {len(files)} photos, fewer than {n}")
    return files[:n]


def get_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """A dataset by registry name, a generic ground-truth JSON file by path, or a folder of images
    (a collection without queries)."""
    if name in DATASETS:
        return DATASETS[name](Path(root) if root else None)
    if name.endswith(".json") or Path(name).is_file():
        return load_ground_truth_file(name)
    if Path(name).is_dir():
        return load_folder(name)
    return lookup(DATASETS, name, "dataset")(Path(root) if root else None)
