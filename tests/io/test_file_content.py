"""A file that is not what its name says is named for what it is, with what to do: the
image readers and the table reader share one look at its first bytes."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from segfew.data.table_rows import read_table_rows
from segfew.errors import DataError
from segfew.io import read_image
from tests.conftest import ramp, save_nifti

LFS = (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22"
       b"eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1234567\n")
HTML = b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n"


def _error(path: Path) -> str:
    with pytest.raises(DataError) as err:
        read_image(path)
    return str(err.value)


@pytest.mark.parametrize(("content", "says"), [
    (LFS, "cannot read image (a Git LFS pointer, not the image it stands for: fetch the file "
          "with `git lfs pull`)"),
    (HTML, "cannot read image (an HTML page, not an image: a failed download? fetch it again)"),
    (b"\n  <html><head><title>Sign in</title></head></html>",
     "cannot read image (an HTML page, not an image"),
    (b"%PDF-1.7\n%\xe2\xe3\n", "cannot read image (a PDF document, not an image)"),
])
def test_a_pointer_or_a_page_saved_as_an_image_is_named_for_what_it_is(
        tmp_path: Path, content: bytes, says: str) -> None:
    for name in ("scan.nii.gz", "scan.nrrd", "scan.png"):
        path = tmp_path / name
        path.write_bytes(content)
        text = _error(path)
        assert text.startswith(f"{path}: {says}"), text
        assert "gzip" not in text


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "slice.png"
    PILImage.fromarray(ramp((32, 32), np.uint8, 3)).save(path)
    return path


def test_a_png_with_a_damaged_chunk_type_is_said_in_words_and_nothing_is_printed(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = _png(tmp_path)
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # the last letter of IDAT's type, as a damaged download has it
    path.write_bytes(bytes(data))
    text = _error(path)
    assert text == (f"{path}: cannot read image (a damaged PNG file: its chunk 2 has no valid "
                    "type or length; fetch or export it again)"), text
    out, err = capfd.readouterr()
    assert "libpng" not in out + err


def test_a_png_with_a_wrong_checksum_or_cut_short_is_said_in_words(tmp_path: Path) -> None:
    path = _png(tmp_path)
    good = path.read_bytes()
    assert read_image(path).shape == (32, 32)  # a sound PNG still reads
    idat = good.index(b"IDAT")
    damaged = bytearray(good)
    damaged[idat + 10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert "a damaged PNG file: the checksum of its IDAT chunk does not match" in _error(path)
    path.write_bytes(good[:idat + 20])
    assert "a damaged PNG file: it ends inside its IDAT chunk: the file is truncated" \
        in _error(path)


def test_a_jpeg_cut_short_is_refused_and_one_with_trailing_bytes_reads(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "slice.jpg"
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path, quality=90)
    good = path.read_bytes()
    path.write_bytes(good + b"trailing bytes an exporter left")
    assert read_image(path).shape == (64, 64)  # bytes after the picture are not damage
    path.write_bytes(good[:len(good) // 2])  # ITK would fill the missing half with grey
    assert _error(path) == (f"{path}: cannot read image (a damaged JPEG file: its image data "
                            "ends early: the file is truncated; fetch or export it again)")
    out, err = capfd.readouterr()
    assert "Premature end" not in out + err


def test_an_uncompressed_nifti_named_gz_is_told_to_be_renamed(tmp_path: Path) -> None:
    plain = save_nifti(tmp_path / "a.nii", ramp((8, 8, 4), np.float32, 1))
    named = tmp_path / "a.nii.gz"
    named.write_bytes(plain.read_bytes())
    assert _error(named).endswith("cannot read image (an uncompressed NIfTI image named .gz, "
                                  "though not compressed: rename it to end in .nii)")
    png = tmp_path / "b.nii.gz"
    png.write_bytes(_png(tmp_path).read_bytes())
    assert "holds a PNG picture but is named .gz: rename it to end in .png" in _error(png)


def _xlsx(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>' * 20)
        z.writestr("xl/worksheets/sheet1.xml", "<worksheet><sheetData/></worksheet>")
    return path


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: _xlsx(p), "cannot read table (an Excel workbook, not a CSV table: save it as "
                         "CSV UTF-8"),
    (lambda p: p.write_bytes(LFS), "cannot read table (a Git LFS pointer, not the table it "
                                   "stands for: fetch the file with `git lfs pull`)"),
    (lambda p: p.write_bytes(HTML), "cannot read table (an HTML page, not a table"),
    (lambda p: p.write_bytes("id,label\ncase1,G2\n".encode("utf-16")),
     "cannot read table (UTF-16 text, as Excel's 'Unicode Text' saves it, not UTF-8: convert "
     "it with `iconv -f utf-16 -t utf-8`"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
     "cannot read table (a PNG picture, not a table"),
])
def test_a_table_that_is_something_else_is_named_for_what_it_is(
        tmp_path: Path, make: Callable[[Path], object], says: str) -> None:
    path = tmp_path / "labels.csv"
    make(path)
    with pytest.raises(DataError) as err:
        read_table_rows(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {says}"), text
    assert "latin1" not in text

