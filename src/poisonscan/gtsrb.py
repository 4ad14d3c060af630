"""The German Traffic Sign Recognition Benchmark (GTSRB): loading and track-wise splits.

GTSRB (Stallkamp et al., Neural Networks 32, 2012) has 43 classes, 39209 training
and 12630 test images. Nothing is downloaded here; :func:`load_gtsrb` reads one of
two forms the user already has:

npz file
    ``x_train`` (n, H, W, 3) uint8, ``y_train`` (n,), ``track_train`` (n,),
    ``x_test`` (m, H, W, 3) uint8, ``y_test`` (m,), integer labels 0..42 and
    track numbers counted within each class.
Official archive layout (a folder)
    ``GTSRB/Final_Training/Images/000CC/TTTTT_FFFFF.ppm`` with ``GT-000CC.csv`` in
    each class folder, and ``GTSRB/Final_Test/Images/*.ppm`` with the ground truth
    ``GT-final_test.csv`` either in that folder or beside the ``GTSRB`` folder. The
    CSVs are semicolon-separated with the header
    ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId`` (ROI corners
    inclusive).

Training images come in tracks: about 30 consecutive frames of one physical sign.
Frames of one track are near duplicates, so a validation split must take whole
tracks (:func:`poisonscan.datasets.split.group_split`), never random images. Both forms
return a global track id per training image, ``class_id * 100000 + track``, in
``extra["group_train"]`` (the near-duplicate groups every dataset has).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from poisonscan.storage import ImageDataset

__all__ = [
    "CLASS_NAMES",
    "load_gtsrb",
    "resize_images",
    "write_official_layout",
]

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no passing",
    "no passing for vehicles over 3.5 t",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 t prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing by vehicles over 3.5 t",
)

_TRACK_STRIDE = 100_000
_NPZ_KEYS = ("x_train", "y_train", "track_train", "x_test", "y_test")
_CSV_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_TEST_CSV = "GT-final_test.csv"
_LAYOUT = (
    "expected the official layout GTSRB/Final_Training/Images/000CC/*.ppm with GT-000CC.csv "
    "in each class folder and GTSRB/Final_Test/Images/*.ppm with GT-final_test.csv"
)
_TRAIN_NAME = re.compile(r"^(\d+)_(\d+)\.ppm$", re.IGNORECASE)
_CLASS_DIR = re.compile(r"^\d{5}$")
_LOG_EVERY = 5000


def load_gtsrb(
    path: str | os.PathLike[str], image_size: int = 32, crop_roi: bool = False
) -> ImageDataset:
    """Load GTSRB from the npz form or from the official archive layout.

    Parameters
    ----------
    path : str or path-like
        Either an ``.npz`` file (see the module docstring for its keys) or a folder
        holding ``GTSRB/Final_Training/Images`` (or the ``GTSRB`` folder itself).
    image_size : int, default 32
        Side of the returned square images. Images are resized with Pillow's
        bilinear filter (antialiased when shrinking); images that already have
        this size are returned unchanged.
    crop_roi : bool, default False
        Crop every image to its annotated region of interest before resizing.
        Only the archive layout carries ROIs.

    Returns
    -------
    ImageDataset
        ``x_train``, ``x_test`` of shape (n, image_size, image_size, 3) uint8,
        int64 labels, the 43 :data:`CLASS_NAMES`, ``meta`` with ``name``,
        ``source`` (``"npz"`` or ``"archive"``), ``image_size``, ``crop_roi`` and
        ``path``, and ``extra["group_train"]`` (int64 global track id per
        training image, ``class_id * 100000 + track``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or a folder lacks ``GTSRB/Final_Training/Images``.
    ValueError
        If the npz file is malformed, ``crop_roi`` is requested for an npz file, or
        the folder deviates from the official layout (a class folder without its
        CSV, a CSV row naming a missing image, no test ground-truth CSV ...).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise TypeError(f"image_size must be an int, got {image_size!r}")
    image_size = int(image_size)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"GTSRB path not found: {p}; expected either the npz file (e.g. gtsrb32.npz) "
            "or a folder containing GTSRB/Final_Training/Images"
        )
    if p.is_dir():
        x_train, y_train, tracks, x_test, y_test = _load_archive(p, image_size, crop_roi)
        source = "archive"
    else:
        if crop_roi:
            raise ValueError(
                f"crop_roi=True needs the official archive layout; the npz file {p} "
                "holds no ROI information"
            )
        x_train, y_train, tracks, x_test, y_test = _load_npz(p, image_size)
        source = "npz"
    return ImageDataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=list(CLASS_NAMES),
        meta={
            "name": "gtsrb",
            "source": source,
            "image_size": image_size,
            "crop_roi": bool(crop_roi),
            "path": str(path),
        },
        extra={"group_train": tracks},
    )


def write_official_layout(
    data: ImageDataset,
    root: str | os.PathLike[str],
    tracks: np.ndarray | None = None,
    *,
    roi_margin: int = 1,
) -> Path:
    """Write ``data`` as a (small) tree in the official GTSRB archive layout.

    A helper to build test trees for :func:`load_gtsrb`; it writes
    ``root/GTSRB/Final_Training/Images/000CC/TTTTT_FFFFF.ppm`` with ``GT-000CC.csv``
    per class and ``root/GTSRB/Final_Test/Images/NNNNN.ppm`` with
    ``GT-final_test.csv`` in the same folder.

    Parameters
    ----------
    data : ImageDataset
        Images (uint8 HWC) and class ids; class ids must be below 100000.
    root : str or path-like
        Folder to write into (created if needed).
    tracks : ndarray of shape (n_train,), optional
        Track id per training image. Within each class, tracks are renumbered 0, 1,
        ... in order of first appearance and frames numbered in image order, so
        images sharing a track id share a ``TTTTT`` prefix. Default: runs of 30
        consecutive images of a class form a track.
    roi_margin : int, default 1
        The ROI box written to the CSVs leaves this many pixels on every side;
        0 gives the whole image.

    Returns
    -------
    Path
        The ``root/GTSRB`` folder.
    """
    gtsrb = Path(root) / "GTSRB"
    y_train = np.asarray(data.y_train)
    if tracks is not None:
        tracks = np.asarray(tracks)
        if tracks.shape != y_train.shape:
            raise ValueError(
                f"tracks has shape {tracks.shape}, expected {y_train.shape} (one per image)"
            )
    train_dir = gtsrb / "Final_Training" / "Images"
    for class_id in np.unique(y_train):
        indices = np.flatnonzero(y_train == class_id)
        class_dir = train_dir / f"{int(class_id):05d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        track_numbers: dict[object, int] = {}
        frames: dict[int, int] = {}
        rows = []
        for k, i in enumerate(indices):
            key = tracks[i].item() if tracks is not None else k // 30
            track = track_numbers.setdefault(key, len(track_numbers))
            frame = frames.get(track, 0)
            frames[track] = frame + 1
            name = f"{track:05d}_{frame:05d}.ppm"
            rows.append(_save_ppm(data.x_train[i], class_dir / name, roi_margin, int(class_id)))
        _write_csv(class_dir / f"GT-{int(class_id):05d}.csv", rows)
    test_dir = gtsrb / "Final_Test" / "Images"
    test_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        _save_ppm(image, test_dir / f"{i:05d}.ppm", roi_margin, int(label))
        for i, (image, label) in enumerate(zip(data.x_test, data.y_test, strict=True))
    ]
    _write_csv(test_dir / _TEST_CSV, rows)
    return gtsrb


# ---------------------------------------------------------------------------
# npz form


def _load_npz(
    p: Path, image_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        npz = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{p} is not a readable npz file ({err}); expected either the npz file or a "
            "folder containing GTSRB/Final_Training/Images"
        ) from err
    if not hasattr(npz, "files"):
        raise ValueError(f"{p} holds a single array, expected an npz file with {_NPZ_KEYS}")
    with npz:
        missing = [k for k in _NPZ_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"{p} lacks the arrays {missing}; expected {list(_NPZ_KEYS)}")
        arrays = {k: npz[k] for k in _NPZ_KEYS}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
            raise ValueError(
                f"{p}: x_{split} has shape {x.shape} and dtype {x.dtype}; "
                "expected (n, H, H, 3) uint8"
            )
        _check_labels(y, x.shape[0], f"{p}: y_{split}")
    track = arrays["track_train"]
    if track.shape != (arrays["x_train"].shape[0],) or not np.issubdtype(track.dtype, np.integer):
        raise ValueError(
            f"{p}: track_train has shape {track.shape} and dtype {track.dtype}; "
            f"expected ({arrays['x_train'].shape[0]},) integers"
        )
    if track.size and (track.min() < 0 or track.max() >= _TRACK_STRIDE):
        raise ValueError(f"{p}: track_train values must lie in [0, {_TRACK_STRIDE})")
    y_train = arrays["y_train"].astype(np.int64)
    y_test = arrays["y_test"].astype(np.int64)
    tracks = y_train * _TRACK_STRIDE + track.astype(np.int64)
    x_train = resize_images(arrays["x_train"], image_size)
    x_test = resize_images(arrays["x_test"], image_size)
    return x_train, y_train, tracks, x_test, y_test


def _check_labels(y: np.ndarray, n: int, what: str) -> None:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} has shape {y.shape} and dtype {y.dtype}; expected ({n},) ints")
    if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{what} holds class ids outside 0..{len(CLASS_NAMES) - 1}")


def resize_images(x: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 images (n, H, W, 3) resized to (n, S, S, 3), S = ``image_size`` (Pillow, bilinear).

    ``x`` itself when its images are S x S already.
    """
    if x.shape[1] == image_size and x.shape[2] == image_size:
        return x
    out = np.empty((x.shape[0], image_size, image_size, 3), dtype=np.uint8)
    for i, image in enumerate(x):
        out[i] = _resize(Image.fromarray(image), image_size)
    return out


def _resize(image: Image.Image, image_size: int) -> np.ndarray:
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


# ---------------------------------------------------------------------------
# official archive layout


def _gtsrb_root(p: Path) -> Path:
    for candidate in (p / "GTSRB", p):
        if (candidate / "Final_Training" / "Images").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{p} contains no GTSRB/Final_Training/Images folder; expected either the npz "
        f"file or a folder containing GTSRB/Final_Training/Images ({_LAYOUT})"
    )


def _load_archive(
    p: Path, image_size: int, crop_roi: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    root = _gtsrb_root(p)
    train_dir = root / "Final_Training" / "Images"
    class_dirs = sorted(d for d in train_dir.iterdir() if d.is_dir() and _CLASS_DIR.match(d.name))
    if not class_dirs:
        raise ValueError(f"{train_dir} holds no class folders 00000..00042; {_LAYOUT}")
    test_dir = root / "Final_Test" / "Images"
    if not test_dir.is_dir():
        raise ValueError(f"test images folder not found: {test_dir}; {_LAYOUT}")
    candidates = [test_dir / _TEST_CSV, root.parent / _TEST_CSV, root / _TEST_CSV]
    test_csv = next((c for c in candidates if c.is_file()), None)
    if test_csv is None:
        tried = ", ".join(str(c) for c in candidates)
        raise ValueError(
            f"no test ground-truth CSV {_TEST_CSV} found (looked for {tried}); it comes with "
            f"the official test ground-truth archive; {_LAYOUT}"
        )

    # Read every CSV before any image, so layout errors surface at once.
    train_rows: list[tuple[Path, tuple[int, int, int, int], int, int]] = []
    for class_dir in class_dirs:
        folder_class = int(class_dir.name)
        gt = class_dir / f"GT-{class_dir.name}.csv"
        if not gt.is_file():
            raise ValueError(f"class folder {class_dir} lacks its ground-truth CSV {gt}; {_LAYOUT}")
        for filename, roi, class_id in _read_csv(gt, class_dir):
            if class_id != folder_class:
                raise ValueError(
                    f"{gt}: {filename} has ClassId {class_id} but lies in folder "
                    f"{class_dir.name}; expected the class folder 000CC to match ClassId"
                )
            match = _TRAIN_NAME.match(filename)
            if match is None:
                raise ValueError(
                    f"{gt}: training image name {filename!r} is not of the form "
                    "TTTTT_FFFFF.ppm (track, frame)"
                )
            track = class_id * _TRACK_STRIDE + int(match.group(1))
            train_rows.append((class_dir / filename, roi, class_id, track))
    test_rows = [(test_dir / f, roi, c) for f, roi, c in _read_csv(test_csv, test_dir)]
    n_total = len(train_rows) + len(test_rows)
    logger.info(
        "reading %d training and %d test images from %s", len(train_rows), len(test_rows), root
    )

    done = 0

    def read(rows: list[tuple[Path, tuple[int, int, int, int], int]]) -> np.ndarray:
        nonlocal done
        out = np.empty((len(rows), image_size, image_size, 3), dtype=np.uint8)
        for i, (file, roi, _) in enumerate(rows):
            out[i] = _read_image(file, roi if crop_roi else None, image_size)
            done += 1
            if done % _LOG_EVERY == 0:
                logger.info("read %d / %d GTSRB images", done, n_total)
        return out

    x_train = read([(f, roi, c) for f, roi, c, _ in train_rows])
    y_train = np.array([c for _, _, c, _ in train_rows], dtype=np.int64)
    tracks = np.array([t for *_, t in train_rows], dtype=np.int64)
    x_test = read(test_rows)
    y_test = np.array([c for _, _, c in test_rows], dtype=np.int64)
    logger.info("read %d GTSRB images", n_total)
    return x_train, y_train, tracks, x_test, y_test


def _read_csv(gt: Path, folder: Path) -> list[tuple[str, tuple[int, int, int, int], int]]:
    """Rows (file name, ROI x1 y1 x2 y2, class id) of a GT CSV; images must exist."""
    with gt.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=";")
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in _CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{gt} lacks the columns {missing}; expected the semicolon-separated header "
                f"{';'.join(_CSV_COLUMNS)}"
            )
        reader.fieldnames = header
        rows: list[tuple[str, tuple[int, int, int, int], int]] = []
        for line, row in enumerate(reader, start=2):
            try:
                filename = row["Filename"].strip()
                x1, y1, x2, y2 = (int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
                class_id = int(row["ClassId"])
            except (TypeError, ValueError, AttributeError) as err:
                raise ValueError(f"{gt}, line {line}: malformed row {row!r} ({err})") from err
            if not 0 <= class_id < len(CLASS_NAMES):
                raise ValueError(
                    f"{gt}, line {line}: ClassId {class_id} outside 0..{len(CLASS_NAMES) - 1}"
                )
            if not (folder / filename).is_file():
                raise ValueError(
                    f"{gt}, line {line} names {filename}, but {folder / filename} does not "
                    f"exist; expected every image listed in the CSV beside it ({_LAYOUT})"
                )
            rows.append((filename, (x1, y1, x2, y2), class_id))
    return rows


def _read_image(file: Path, roi: tuple[int, int, int, int] | None, image_size: int) -> np.ndarray:
    with Image.open(file) as img:
        image = img.convert("RGB")
    if roi is not None:
        x1, y1, x2, y2 = roi
        w, h = image.size
        box = (max(0, x1), max(0, y1), min(w, x2 + 1), min(h, y2 + 1))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"{file}: empty ROI {roi} for an image of size {w}x{h}")
        image = image.crop(box)
    return _resize(image, image_size)


def _save_ppm(
    image: np.ndarray, file: Path, roi_margin: int, class_id: int
) -> tuple[str, int, int, int, int, int, int, int]:
    h, w = int(image.shape[0]), int(image.shape[1])
    m = roi_margin if w > 2 * roi_margin and h > 2 * roi_margin else 0
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(file, format="PPM")
    return (file.name, w, h, m, m, w - 1 - m, h - 1 - m, class_id)


def _write_csv(file: Path, rows: list[tuple[str, int, int, int, int, int, int, int]]) -> None:
    with file.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=";", lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        writer.writerows(rows)
