"""`woof data fetch/verify/stats` on small copies of the real Imagewoof data (built in tmp_path)."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from training.data import IMAGENET_VAL_PREFIX, SPLITS, list_samples
from training.fetch import archive_root
from training.stats import stats
from training.verify import NOISY_CSV, verify
from woof.breeds import BREEDS, WNIDS
from woof.cli import main

from .conftest import DATA


def make_subset(dest: Path, per_class: int = 3, link: bool = False) -> Path:
    """dest/train|val/<wnid>/ with the first `per_class` real images of each class, plus the matching
    rows of the real noisy_imagewoof.csv."""
    assert (DATA / "train").is_dir() and (DATA / "val").is_dir(), f"real Imagewoof data missing at {DATA}"
    kept = set()
    for split in SPLITS:
        for wnid in WNIDS:
            (dest / split / wnid).mkdir(parents=True)
            for src in sorted((DATA / split / wnid).iterdir())[:per_class]:
                target = dest / split / wnid / src.name
                target.symlink_to(src) if link else shutil.copyfile(src, target)
                kept.add(f"{split}/{wnid}/{src.name}")
    with (DATA / NOISY_CSV).open(newline="") as f, (dest / NOISY_CSV).open("w", newline="") as out:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(out, reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["path"] in kept)
    return dest


@pytest.fixture
def subset(tmp_path) -> Path:
    return make_subset(tmp_path / "imagewoof2-160")


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["data", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------- verify
def test_verify_subset_passes_and_reports_counts(subset, capsys):
    rc, out, err = run(capsys, "verify", "--data", str(subset), "--quiet")
    assert rc == 0, err
    assert "OK" in out and "corrupt: 0" in out
    assert "train:     30 images" in out and "val:       30 images" in out
    assert "MISMATCH" in out and "warning: train has 30 images" in out  # not the official counts: a warning only
    assert f"{NOISY_CSV}: 60 rows, matches the files on disk" in out
    for wnid in WNIDS:
        assert f"{wnid}  {BREEDS[wnid]}" in out

    report = verify(subset)
    assert report.ok and report.decoded
    assert report.counts == {s: dict.fromkeys(WNIDS, 3) for s in SPLITS}
    assert report.totals == {"train": 30, "val": 30}
    assert report.corrupt == [] and report.noisy_missing == [] and report.noisy_extra == []
    assert report.imagenet_val == sum(s.path.name.startswith(IMAGENET_VAL_PREFIX) for s in list_samples(subset, "val"))


def test_verify_counts_greyscale_and_csv_mismatch(subset, capsys):
    first = sorted((subset / "train" / WNIDS[0]).iterdir())[0]
    Image.open(first).convert("L").save(first, "JPEG")  # a real greyscale JPEG, like the 121 in the data set
    rows = (subset / NOISY_CSV).read_text().splitlines()
    (subset / NOISY_CSV).write_text("\n".join(rows[:-1] + ["train/n02086240/gone.JPEG,,,,,,False"]) + "\n")

    report = verify(subset, decode=False)
    assert report.greyscale == [str(first)]
    assert len(report.noisy_missing) == 1 and report.noisy_extra == ["train/n02086240/gone.JPEG"]
    assert report.ok  # csv mismatch is a warning
    rc, out, _ = run(capsys, "verify", "--data", str(subset), "--quick", "--quiet")
    assert rc == 0
    assert "greyscale images (mode L): 1" in out and "headers read (--quick: not decoded)" in out
    assert "1 on disk but not listed, 1 listed but not on disk" in out


def test_verify_missing_class_folder_fails_naming_the_breed(subset, capsys):
    shutil.rmtree(subset / "val" / "n02088364")
    rc, _, err = run(capsys, "verify", "--data", str(subset), "--quiet")
    assert rc == 2
    assert err.startswith("woof: error:") and "n02088364 (beagle)" in err and "val" in err
    assert "Traceback" not in err


def test_verify_truncated_jpeg_is_reported_corrupt(subset, capsys):
    victim = sorted((subset / "val" / WNIDS[3]).iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    rc, out, err = run(capsys, "verify", "--data", str(subset), "--quiet")
    assert rc == 2
    assert f"CORRUPT {victim}:" in out and "truncated" in out
    assert "1 corrupt image(s)" in err
    report = verify(subset)
    assert [p for p, _ in report.corrupt] == [str(victim)] and not report.ok


def test_verify_empty_class_folder_fails(subset, capsys):
    for p in (subset / "train" / WNIDS[9]).iterdir():
        p.unlink()
    rc, _, err = run(capsys, "verify", "--data", str(subset), "--quiet")
    assert rc == 2 and f"train/{WNIDS[9]} (dingo) holds no images" in err


def test_verify_in_a_pool_of_two(tmp_path):
    root = make_subset(tmp_path / "linked", per_class=6, link=True)  # 120 images: big enough for the pool
    report = verify(root, workers=2)
    assert report.ok and report.totals == {"train": 60, "val": 60}


def test_verify_needs_a_data_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WOOF_DATA_ROOT", raising=False)
    rc, _, err = run(capsys, "verify")
    assert rc == 2 and "--data" in err
    rc, _, err = run(capsys, "verify", "--data", str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err


# ---------------------------------------------------------------- fetch
def make_tgz(path: Path, root: Path, arcname: str = "imagewoof2-160", extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname=arcname)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_fetch_from_tgz_unpacks_and_verifies(subset, tmp_path, capsys):
    tgz = make_tgz(tmp_path / "imagewoof2-160.tgz", subset)
    dest = tmp_path / "dest"
    rc, out, err = run(capsys, "fetch", "--from", str(tgz), "--dest", str(dest), "--quiet")
    assert rc == 0, err
    root = dest / "imagewoof2-160"
    assert f"export WOOF_DATA_ROOT={root.resolve()}" in out
    assert leftovers(dest) == []
    report = verify(root)
    assert report.ok and report.totals == {"train": 30, "val": 30} and report.noisy_csv

    rc, _, err = run(capsys, "fetch", "--from", str(tgz), "--dest", str(dest), "--quiet")
    assert rc == 2 and "already exists" in err  # never unpacks over an existing copy


def test_fetch_download_path_with_a_local_url(subset, tmp_path, capsys):
    tgz = make_tgz(tmp_path / "mirror.tgz", subset)
    dest = tmp_path / "dest"
    rc, out, err = run(capsys, "fetch", "--url", tgz.as_uri(), "--dest", str(dest), "--quiet")
    assert rc == 0, err
    assert verify(dest / "imagewoof2-160", decode=False).ok
    assert leftovers(dest) == []  # the .part download is gone
    rc, out, _ = run(capsys, "fetch", "--dest", str(dest), "--quiet")  # already there: no download at all
    assert rc == 0 and "already there" in out


def test_fetch_from_folder_uses_it_in_place(subset, tmp_path, capsys):
    for folder in (subset, subset.parent):  # the root itself, or a folder holding it
        rc, out, err = run(capsys, "fetch", "--from", str(folder), "--dest", str(tmp_path / "dest"))
        assert rc == 0, err
        assert "in place" in out and f"export WOOF_DATA_ROOT={subset.resolve()}" in out
    assert not (tmp_path / "dest").exists()


def test_fetch_from_missing_path_is_a_clear_error(tmp_path, capsys):
    rc, _, err = run(capsys, "fetch", "--from", str(tmp_path / "no-such.tgz"), "--dest", str(tmp_path / "d"))
    assert rc == 2 and "no such file or folder" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_fetch_rejects_non_imagewoof_and_unsafe_archives(subset, tmp_path, capsys):
    dest = tmp_path / "dest"
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tar at all" * 100)
    rc, _, err = run(capsys, "fetch", "--from", str(junk), "--dest", str(dest), "--quiet")
    assert rc == 2 and "not a readable tar archive" in err

    wrong = make_tgz(tmp_path / "wrong.tgz", subset / "train", arcname="train-only")
    rc, _, err = run(capsys, "fetch", "--from", str(wrong), "--dest", str(dest), "--quiet")
    assert rc == 2 and "not Imagewoof" in err

    evil = make_tgz(tmp_path / "evil.tgz", subset, extra={"../evil.txt": b"owned"})
    rc, _, err = run(capsys, "fetch", "--from", str(evil), "--dest", str(dest), "--quiet")
    assert rc == 2 and "unsafe" in err
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists()  # nothing half-unpacked, not even the folder it created


def test_archive_root():
    assert archive_root(["imagewoof2-160/train/n1/a.JPEG", "imagewoof2-160/val/n1/b.JPEG"]) == "imagewoof2-160"
    assert archive_root(["./train/n1/a.JPEG", "./val/n1/b.JPEG", "./noisy_imagewoof.csv"]) == ""


def test_fetch_offline_fails_fast_with_a_clear_message(tmp_path, capsys):
    start = time.monotonic()
    rc, _, err = run(capsys, "fetch", "--size", "160", "--dest", str(tmp_path / "dest"), "--quiet")
    assert time.monotonic() - start < 30
    assert rc == 2
    assert "download of https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz failed" in err
    assert "woof data fetch --from PATH" in err and "WOOF_DATA_ROOT" in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert not (tmp_path / "dest").exists()


def test_help_texts(capsys):
    for sub in ("fetch", "verify", "stats"):
        with pytest.raises(SystemExit) as e:
            main(["data", sub, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--from PATH" in out and "--quick" in out and "reports/data" in out


# ---------------------------------------------------------------- stats
def test_stats_writes_markdown_and_plots(subset, tmp_path, capsys):
    (subset / "val" / WNIDS[0] / sorted((subset / "val" / WNIDS[0]).iterdir())[0].name).unlink()
    st = stats(subset)
    assert st["counts"]["train"] == dict.fromkeys(WNIDS, 3)
    assert st["counts"]["val"] == {w: 2 if w == WNIDS[0] else 3 for w in WNIDS}
    assert len(st["sizes"]["train"]) == 30 and min(min(wh) for wh in st["sizes"]["train"]) == 160

    out_dir = tmp_path / "report"
    rc, out, err = run(capsys, "stats", "--data", str(subset), "--out", str(out_dir), "--quiet")
    assert rc == 0, err
    md = (out_dir / "data_stats.md").read_text()
    assert f"| 0 | {BREEDS[WNIDS[0]]} | {WNIDS[0]} | 3 | 2 | 5 | 10.0% |" in md
    assert f"| 9 | {BREEDS[WNIDS[9]]} | {WNIDS[9]} | 3 | 3 | 6 | 10.0% |" in md
    assert "| | **total** | | **30** | **29** | **59** | |" in md
    assert "| train | shorter side | 160 |" in md
    for name in ("class_balance_train.png", "class_balance_val.png", "image_sizes.png"):
        assert f"]({name})" in md
        with Image.open(out_dir / name) as img:
            assert img.format == "PNG" and img.width > 300
        assert str(out_dir / name) in out
    assert str(out_dir / "data_stats.md") in out
