"""Label tables, image sources, the study's augmentation and samplers (fdflare.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fdflare.core.errors import InputError, MissingDataError
from fdflare.core.paths import image_relpaths
from fdflare.data.dataset import (
    FLARE_KINDS,
    HFLIP,
    NOFLARE_KINDS,
    ORIGINAL,
    RANDOM_CHOICE,
    ROTATE,
    VFLIP,
    EpochSampler,
    FlareDataset,
    augmentation_plan,
    rotate,
)
from fdflare.data.sources import ArrayStoreImages, FolderImages, check_images, open_images
from fdflare.data.tables import class_weights, fold_tables, read_label_csv


def make_tiny_dataset(
    root: Path,
    *,
    size: int = 32,
    per_month: int = 4,
    ext: str = "png",
    seed: int = 0,
    year: int = 2011,
) -> dict[str, Path]:
    """Write a tiny study-like dataset: random grey images in the study tree, fold CSVs, labels.csv.

    ``per_month`` hourly images in each month of ``year``; every third instance is a flare
    (target 1) and carries a bright square. Fold k validates on quarter k.
    """
    rng = np.random.default_rng(seed)
    times = pd.DatetimeIndex(
        [
            pd.Timestamp(year, m, 3 + 7 * (i // 2), i % 2)
            for m in range(1, 13)
            for i in range(per_month)
        ]
    )
    labels = image_relpaths(times, ext)
    target = (np.arange(len(times)) % 3 == 0).astype(int)
    images = root / "images"
    for label, t in zip(labels, target, strict=True):
        a = rng.integers(0, 80, (size, size), dtype=np.uint8)
        if t:
            a[size // 4 : size // 2, size // 4 : size // 2] = 230
        path = images / label
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, "L").save(path)
    quarter = (times.month - 1) // 3 + 1
    lab = root / "labels"
    lab.mkdir(parents=True, exist_ok=True)
    study = pd.DataFrame({"label": labels, "goes_class": target})
    for k in range(1, 5):
        study[quarter != k].to_csv(lab / f"Fold{k}_train.csv", index=False)
        study[quarter == k].to_csv(lab / f"Fold{k}_val.csv", index=False)
    n = len(labels)
    full = pd.DataFrame(
        {
            "label": labels,
            "time": times.strftime("%Y-%m-%d %H:%M:%S"),
            "fold": quarter,
            "target": target,
            "goes_class": np.where(
                target == 1, "M1.5", np.where(np.arange(n) % 3 == 1, "C2.0", "")
            ),  # empty: no flare in the window, as `fdflare label` writes it
            "fl_lon": np.where(target == 1, np.linspace(-85, 85, n), np.nan).round(2),
            "fl_lat": np.where(target == 1, 12.5, np.nan),
            "fl_start": np.where(
                target == 1, (times + pd.Timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S"), ""
            ),
        }
    )
    full.to_csv(lab / "labels.csv", index=False)
    return {"root": root, "images": images, "labels": lab, "table": lab / "labels.csv"}


def fit_history_map(catalog: Path, start: str, end: str, out: Path) -> tuple[Path, object]:
    """A history calibration map fitted on the hours ``start``..``end`` of a catalog's Sun.

    The scores follow the outcome (a flare >= M1.0 in the next 24 h) with noise, so the map
    weighs both the score and the history. Written to ``out``; returns it and the map.
    """
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.calibration import fit_calibrator
    from fdflare.analysis.history import flare_history

    cat = read_catalog(catalog)
    hours = pd.date_range(start, end, freq="h")
    starts = cat.loc[cat["flux"] >= 1e-5, "start_time"].to_numpy()
    target = np.array(
        [((starts > h) & (starts <= h + pd.Timedelta(hours=24))).any() for h in hours.to_numpy()]
    ).astype(int)
    rng = np.random.default_rng(0)
    prob = np.clip(0.3 + 0.3 * target + rng.normal(0, 0.15, len(hours)), 0.01, 0.99)
    target[:3] = [0, 1, 0]  # both classes, whatever the Sun drew
    cal = fit_calibrator(prob, target, "history", history=flare_history(hours, cat))
    import json

    out.write_text(json.dumps(cal.to_dict()))
    return out, cal


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


# --------------------------------------------------------------------------- label tables


def test_read_study_fold_file(tiny):
    df = read_label_csv(tiny["labels"] / "Fold1_train.csv")
    assert list(df.columns) == ["label", "target"]
    assert df["target"].dtype == np.int64
    assert len(df) == 36 and df["target"].sum() == 12


def test_read_full_table_keeps_columns(tiny):
    df = read_label_csv(tiny["table"])
    assert {"label", "target", "goes_class", "fl_lon", "fold"} <= set(df.columns)
    assert set(df["goes_class"].fillna("")) == {"M1.5", "C2.0", ""}


@pytest.mark.reference
def test_read_reference_fold_files(reference_dir):
    train = read_label_csv(reference_dir / "labels" / "Fold1_train.csv")
    val = read_label_csv(reference_dir / "labels" / "Fold1_val.csv")
    assert len(train) + len(val) == 63649
    # the study's fold 1 confusion: P = TP + FN = 1729 + 605
    assert int(val["target"].sum()) == 1729 + 605
    assert train["label"].str.match(r"^\d{4}/\d{2}/\d{2}/HMI\.m.*\.jpg$").all()


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (
            "label,goes_class\na/HMI.m2011.01.01_00.00.00.png,0\nb.png,2\n",
            3,
            "goes_class",
            "not 0 or 1",
        ),
        ("label,target\na.png,1\nb.png,x\n", 3, "target", "not 0 or 1"),
        ("label,goes_class\n/etc/passwd,0\n", 2, "label", "relative path"),
        ("label,goes_class\nok.png,0\n2011/../../x.png,1\n", 3, "label", "relative path"),
        ("label,goes_class\n,0\n", 2, "label", "empty label"),
        ("name,goes_class\na.png,0\n", None, "label", "missing column"),
        ("label,flux\na.png,0\n", None, "target", "missing target"),
    ],
)
def test_bad_label_tables_name_file_line_field(tmp_path, text, line, field, words):
    path = tmp_path / "Fold1_train.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_label_csv(path)
    assert err.value.path == str(path)
    assert err.value.line == line
    assert err.value.field == field
    assert words in str(err.value)


def test_fold_tables_from_fold_files_and_from_labels_csv(tiny, tmp_path):
    a = fold_tables(tiny["labels"], 2)
    assert a.train_path.name == "Fold2_train.csv" and a.val_path.name == "Fold2_val.csv"
    # a table file given: that table is split, even beside fold files
    d = fold_tables(tiny["table"], 2)
    assert d.train_path == d.val_path == tiny["table"]
    assert d.val["label"].tolist() == a.val["label"].tolist()
    assert "goes_class" in d.val.columns  # the full table's columns stay
    # only labels.csv: split by its fold column
    (tmp_path / "labels.csv").write_bytes(tiny["table"].read_bytes())
    b = fold_tables(tmp_path, 2)
    assert b.val["label"].tolist() == a.val["label"].tolist()
    assert b.train["label"].tolist() == a.train["label"].tolist()
    # without a fold column: by the calendar quarter of the image time
    full = pd.read_csv(tiny["table"]).drop(columns=["fold"])
    full.to_csv(tmp_path / "labels.csv", index=False)
    c = fold_tables(tmp_path / "labels.csv", 2)
    assert c.val["label"].tolist() == a.val["label"].tolist()


def test_fold_tables_missing_says_what_to_run(tmp_path):
    with pytest.raises(MissingDataError, match="fdflare label"):
        fold_tables(tmp_path, 1)


# --------------------------------------------------------------------------- recipe numbers


def test_class_weights_formula():
    r = 1 - 2 * 90 / (4 * 10 + 2 * 90)
    assert class_weights(10, 90) == pytest.approx((r, 1 - r))
    # each class weighted by the share of the other in the augmented set
    w_nf, w_fl = class_weights(10, 90)
    assert w_nf == pytest.approx(40 / 220) and w_fl == pytest.approx(180 / 220)
    assert class_weights(5, 5, 1, 1) == pytest.approx((0.5, 0.5))


@pytest.mark.reference
def test_class_weights_of_the_study_fold1(reference_dir):
    t = read_label_csv(reference_dir / "labels" / "Fold1_train.csv")["target"]
    n_fl, n_nf = int(t.sum()), int((t == 0).sum())
    w = class_weights(n_fl, n_nf)
    assert w[0] == pytest.approx(1 - 2 * n_nf / (4 * n_fl + 2 * n_nf))
    assert 0 < w[0] < 0.5 < w[1] < 1  # flares are the minority even after x4


def test_augmentation_plan_counts_and_order():
    target = np.array([0, 1, 0, 0, 1, 0, 0])
    rows, kinds = augmentation_plan(target)
    n_fl, n_nf = 2, 5
    assert len(rows) == 4 * n_fl + 2 * n_nf
    for row in (1, 4):
        assert sorted(kinds[rows == row].tolist()) == sorted(FLARE_KINDS)
    for row in (0, 2, 3, 5, 6):
        assert sorted(kinds[rows == row].tolist()) == sorted(NOFLARE_KINDS)
    # the study's concatenation order: flare originals, hflips, vflips, rotations, then no-flares
    assert kinds[:n_fl].tolist() == [ORIGINAL] * n_fl
    assert kinds[n_fl : 2 * n_fl].tolist() == [HFLIP] * n_fl
    assert kinds[3 * n_fl : 4 * n_fl].tolist() == [ROTATE] * n_fl
    assert kinds[-n_nf:].tolist() == [RANDOM_CHOICE] * n_nf
    rows, kinds = augmentation_plan(target, augment=False)
    assert rows.tolist() == list(range(7)) and set(kinds.tolist()) == {ORIGINAL}


# --------------------------------------------------------------------------- dataset


def test_dataset_items_follow_to_tensor_and_the_augmentations(tiny):
    df = read_label_csv(tiny["labels"] / "Fold1_train.csv")
    source = FolderImages(tiny["images"])
    ds = FlareDataset(df, source, image_size=32, augment=True, seed=3)
    assert len(ds) == 4 * 12 + 2 * 24
    raw = {
        row: np.array(Image.open(tiny["images"] / df["label"][row]))
        for row in set(ds.rows.tolist())
    }
    seen = set()
    for i in range(len(ds)):
        x, y = ds[(5, i)]
        assert x.dtype == torch.float32 and x.shape == (1, 32, 32)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        row, kind = int(ds.rows[i]), int(ds.kinds[i])
        assert int(y) == df["target"][row]
        img = raw[row]
        got = (x[0].numpy() * 255).round().astype(np.uint8)
        if kind == ORIGINAL:
            assert np.array_equal(got, img)
            assert torch.equal(x[0], torch.from_numpy(img).float() / 255)  # ToTensor: x / 255
        elif kind == HFLIP:
            assert np.array_equal(got, img[:, ::-1])
        elif kind == VFLIP:
            assert np.array_equal(got, img[::-1])
        else:
            candidates = [img[:, ::-1], img[::-1]] if kind == RANDOM_CHOICE else []
            if not any(np.array_equal(got, c) for c in candidates):
                # a rotation within +-5 deg: the centre pixel stays, corners may be filled with 0
                assert got[16, 16] == img[16, 16]
                seen.add("rotation")
        seen.add(kind)
    assert {ORIGINAL, HFLIP, VFLIP, ROTATE, RANDOM_CHOICE, "rotation"} <= seen


def test_random_choices_depend_on_seed_epoch_index_only(tiny):
    df = read_label_csv(tiny["labels"] / "Fold1_train.csv")
    ds = FlareDataset(df, FolderImages(tiny["images"]), image_size=32, augment=True, seed=1)
    aug = np.flatnonzero(np.isin(ds.kinds, [ROTATE, RANDOM_CHOICE]))
    first = [ds[(0, int(i))][0] for i in aug]
    again = [ds[(0, int(i))][0] for i in aug]
    later = [ds[(1, int(i))][0] for i in aug]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, later, strict=True))


def test_rotation_matches_torchvision_random_rotation():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    img = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    for angle in (-5.0, -2.3, 0.7, 4.99):
        ref = np.asarray(tvf.rotate(Image.fromarray(img), angle))  # what RandomRotation applies
        assert np.array_equal(rotate(img, angle), ref)


def test_augmenting_on_the_device_gives_the_loader_workers_pixels(tiny):
    from fdflare.data.dataset import augment_on_device, rotate_batch

    df = read_label_csv(tiny["labels"] / "Fold1_train.csv")
    source = FolderImages(tiny["images"])
    host = FlareDataset(df, source, image_size=32, augment=True, seed=3, as_uint8=True)
    dev = FlareDataset(
        df, source, image_size=32, augment=True, seed=3, as_uint8=True, device_augment=True
    )
    keys = [(e, i) for e in (0, 5) for i in range(len(host))]
    batch = torch.utils.data.default_collate([dev[k] for k in keys])
    x, y, aug = batch
    assert x.dtype == torch.uint8 and aug.shape == (len(keys), 2)
    assert set(aug[:, 0].tolist()) == {0.0, 1.0, 2.0, 3.0}  # every kind occurs
    expected = torch.stack([host[k][0] for k in keys])
    assert torch.equal(augment_on_device(x, aug), expected)
    assert torch.equal(y, torch.stack([host[k][1] for k in keys]))
    # PIL's rotation, pixel for pixel, at the study's size and odd sizes
    rng = np.random.default_rng(1)
    for shape in ((512, 512), (33, 47)):
        img = rng.integers(1, 256, shape).astype(np.uint8)
        for angle in rng.uniform(-5, 5, 3):
            got = rotate_batch(torch.from_numpy(img)[None, None], torch.tensor([angle]))
            assert np.array_equal(got[0, 0].numpy(), rotate(img, float(angle)))


def test_uint8_items_for_the_device_copy(tiny):
    df = read_label_csv(tiny["labels"] / "Fold1_val.csv")
    source = FolderImages(tiny["images"])
    a = FlareDataset(df, source, image_size=32)
    b = FlareDataset(df, source, image_size=32, as_uint8=True)
    xb, _ = b[0]
    assert xb.dtype == torch.uint8
    assert torch.equal(xb.float() / 255, a[0][0])


def test_torchvision_decoder_matches_pil(tiny):
    df = read_label_csv(tiny["labels"] / "Fold1_val.csv")
    pil = FolderImages(tiny["images"], decoder="pil")
    tv = FolderImages(tiny["images"], decoder="torchvision")
    for label in df["label"][:5]:
        assert np.array_equal(pil.read(label), tv.read(label))


def test_loader_batches_do_not_depend_on_workers(tiny):
    df = read_label_csv(tiny["labels"] / "Fold1_train.csv")
    ds = FlareDataset(df, FolderImages(tiny["images"]), image_size=32, augment=True, seed=2)

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = EpochSampler(len(ds), shuffle=True, seed=2)
        sampler.set_epoch(3)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=16, sampler=sampler, num_workers=workers
        )
        return [x for x, _ in loader]

    a, b = batches(0), batches(1)
    assert len(a) == len(b) == 6
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_epoch_sampler_order_and_shards():
    s = EpochSampler(10, shuffle=True, seed=7)
    s.set_epoch(0)
    e0 = [i for _, i in s]
    s.set_epoch(1)
    e1 = [i for _, i in s]
    assert sorted(e0) == sorted(e1) == list(range(10)) and e0 != e1
    assert all(epoch == 1 for epoch, _ in s)
    s2 = EpochSampler(10, shuffle=True, seed=7)
    s2.set_epoch(1)
    assert [i for _, i in s2] == e1
    # training shards: padded to equal length, covering everything
    shards = [list(EpochSampler(10, shuffle=True, seed=7, rank=r, world_size=3)) for r in range(3)]
    assert {len(x) for x in shards} == {4}
    assert {i for sh in shards for _, i in sh} == set(range(10))
    # evaluation shards: no duplicates, uneven
    ev = [
        [i for _, i in EpochSampler(10, shuffle=False, rank=r, world_size=3, pad=False)]
        for r in range(3)
    ]
    assert sorted(i for sh in ev for i in sh) == list(range(10))
    assert [
        len(EpochSampler(10, shuffle=False, rank=r, world_size=3, pad=False)) for r in range(3)
    ] == [4, 3, 3]


# --------------------------------------------------------------------------- up-front checks


def test_missing_images_counted_listed_or_skipped(tiny, tmp_path):
    df = read_label_csv(tiny["labels"] / "Fold1_val.csv")
    extra = pd.DataFrame(
        {"label": ["2011/02/28/HMI.m2011.02.28_00.00.00.png", "2030/01/01/x.png"], "target": [0, 1]}
    )
    table = pd.concat([df, extra], ignore_index=True)
    source = FolderImages(tiny["images"])
    with pytest.raises(MissingDataError) as err:
        check_images(table, source, image_size=32, table_path="Fold1_val.csv")
    text = str(err.value)
    assert "2 of 14 images are missing" in text
    assert "HMI.m2011.02.28_00.00.00.png" in text and "--skip-missing" in text
    got = check_images(table, source, image_size=32, skip_missing=True)
    assert got.keep.tolist() == [True] * 12 + [False, False]
    assert got.missing == extra["label"].tolist()


def test_exists_with_another_extension(tiny, tmp_path):
    df = read_label_csv(tiny["labels"] / "Fold1_val.csv")
    as_jpg = df.assign(label=df["label"].str.replace(".png", ".jpg", regex=False))
    assert not FolderImages(tiny["images"]).exists(as_jpg["label"]).any()
    renamed = FolderImages(tiny["images"], ext="png")
    assert renamed.exists(as_jpg["label"]).all()
    assert np.array_equal(
        renamed.read(as_jpg["label"][0]), FolderImages(tiny["images"]).read(df["label"][0])
    )


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: Image.fromarray(np.zeros((16, 16), np.uint8)).save(p, format="PNG"), "16x16 L"),
        (
            lambda p: Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p, format="PNG"),
            "32x32 RGB",
        ),
        (lambda p: p.write_bytes(b"not an image at all"), "not a readable PNG or JPEG image"),
    ],
)
def test_wrong_size_mode_or_corrupt_image_names_the_file(tiny, tmp_path, make, words):
    images = _copy_tree(tiny["images"], tmp_path / "images")
    df = read_label_csv(tiny["labels"] / "Fold1_val.csv")
    bad = images / df["label"][3]
    make(bad)
    with pytest.raises(InputError) as err:
        check_images(df, FolderImages(images), image_size=32)
    assert str(bad) in str(err.value)
    assert words in str(err.value)


def test_open_images_missing_folder(tmp_path):
    with pytest.raises(MissingDataError, match="fdflare prepare"):
        open_images(tmp_path / "nope")


def test_array_store_gives_the_same_items(tiny, tmp_path):
    import fdflare.prepare.pipeline as prepare

    out = _copy_tree(tiny["images"], tmp_path / "prepared")
    labels = sorted(str(p.relative_to(out).as_posix()) for p in out.rglob("*.png"))
    geometry = pd.DataFrame({"path": labels, "width": 32, "height": 32})
    prepare.build_array_store(out, geometry, 32, workers=1, progress=False)
    source = open_images(out)
    assert isinstance(source, ArrayStoreImages)
    assert isinstance(open_images(out, array_store=False), FolderImages)
    df = read_label_csv(tiny["labels"] / "Fold1_train.csv")
    files = FlareDataset(df, FolderImages(out), image_size=32, augment=True, seed=4)
    store = FlareDataset(df, source, image_size=32, augment=True, seed=4)
    for i in range(0, len(files), 7):
        assert torch.equal(files[(2, i)][0], store[(2, i)][0])
    # worker processes reopen the memory map instead of receiving a copy
    loader = torch.utils.data.DataLoader(store, batch_size=8, num_workers=1)
    assert sum(len(x) for x, _ in loader) == len(store)
    missing = pd.DataFrame({"label": ["2011/01/01/HMI.m2011.01.01_00.00.00.png"], "target": [0]})
    with pytest.raises(MissingDataError, match="1 of 1 images are missing"):
        check_images(missing, source, image_size=32)
    with pytest.raises(InputError, match="expected 64x64"):
        check_images(df, source, image_size=64)
