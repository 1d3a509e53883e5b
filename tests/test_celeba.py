"""The CelebA folder-layout reader: values read back exactly, and each kind of bad input gets one clear error."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFile

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.data.celeba import CelebAFormatError, check_images, load_image, read_celeba


def set_line(path, number: int, text: str | None) -> None:
    """Replace line `number` (1-based) of a text file, or delete it when `text` is None."""
    lines = path.read_text().split("\n")
    if text is None:
        del lines[number - 1]
    else:
        lines[number - 1] = text
    path.write_text("\n".join(lines))


def raises_naming(path, *fragments):
    """pytest.raises for a CelebAFormatError whose message names `path` and contains every fragment."""
    pattern = "".join(f"(?=.*{re.escape(str(f))})" for f in (path, *fragments))
    return pytest.raises(CelebAFormatError, match=re.compile(pattern, re.S))


# --------------------------------------------------------------------------------------------- reading good data


def test_reads_back_what_was_written(celeba):
    index = read_celeba(celeba.root)
    assert len(index) == 10
    assert index.filenames == celeba.filenames
    assert index.attributes.dtype == np.int8 and index.attributes.shape == (10, 40)
    np.testing.assert_array_equal(index.attributes, celeba.attributes)
    np.testing.assert_array_equal(index.splits, celeba.splits)
    assert index.attribute_names == CELEBA_ATTRIBUTES


def test_splits_select_the_right_rows(celeba):
    index = read_celeba(celeba.root)
    sizes = {name: len(index.split(name)) for name in ("train", "valid", "test", "all")}
    assert sizes == {"train": 6, "valid": 2, "test": 2, "all": 10}
    test = index.split("test")
    assert test.filenames == ["000009.jpg", "000010.jpg"]
    np.testing.assert_array_equal(test.attributes, celeba.attributes[8:])
    with pytest.raises(ValueError, match="expected one of train, valid, test, all"):
        index.split("validation")


def test_positive_rates_in_percent(celeba):
    index = read_celeba(celeba.root)
    rates = index.positive_rates()
    assert list(rates) == list(CELEBA_ATTRIBUTES)
    for column, name in enumerate(CELEBA_ATTRIBUTES):
        assert rates[name] == pytest.approx(10.0 * int((celeba.attributes[:, column] == 1).sum()))


def test_accepts_crlf_header_without_trailing_space_and_no_final_newline(celeba):
    attr = celeba.root / "list_attr_celeba.txt"
    text = attr.read_text().replace(" ".join(CELEBA_ATTRIBUTES) + " \n", " ".join(CELEBA_ATTRIBUTES) + "\n")
    attr.write_bytes(text.rstrip("\n").replace("\n", "\r\n").encode())
    np.testing.assert_array_equal(read_celeba(celeba.root).attributes, celeba.attributes)


def test_partition_in_another_order_is_aligned_by_name(celeba):
    part = celeba.root / "list_eval_partition.txt"
    part.write_text("\n".join(reversed(part.read_text().splitlines())) + "\n")
    np.testing.assert_array_equal(read_celeba(celeba.root).splits, celeba.splits)


def test_extra_images_in_the_folder_are_ignored(celeba):
    Image.new("RGB", (178, 218)).save(celeba.root / "img_align_celeba" / "999999.jpg")
    assert len(read_celeba(celeba.root)) == 10


# --------------------------------------------------------------------------------------------- missing pieces


def test_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with raises_naming(root, "folder not found", "img_align_celeba/"):
        read_celeba(root)


def test_missing_image_folder(celeba):
    shutil.rmtree(celeba.root / "img_align_celeba")
    with raises_naming(celeba.root / "img_align_celeba", "folder not found", "expected the CelebA images"):
        read_celeba(celeba.root)


def test_missing_attribute_file(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    path.unlink()
    with raises_naming(path, "file not found", "expected the CelebA text file list_attr_celeba.txt"):
        read_celeba(celeba.root)


def test_missing_partition_file(celeba):
    path = celeba.root / "list_eval_partition.txt"
    path.unlink()
    with raises_naming(path, "file not found", "expected the CelebA text file list_eval_partition.txt"):
        read_celeba(celeba.root)


# --------------------------------------------------------------------------------------------- list_attr_celeba.txt


def test_count_line_not_an_integer(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    set_line(path, 1, "ten")
    with raises_naming(path, "line 1", "expected the number of images as an integer", "'ten'"):
        read_celeba(celeba.root)


def test_count_line_does_not_match_rows(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    set_line(path, 1, "11")
    with raises_naming(path, "line 1", "says 11 images", "has 10 rows"):
        read_celeba(celeba.root)


def test_header_with_renamed_attributes_names_them(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    names = list(CELEBA_ATTRIBUTES)
    names[4], names[20] = "Bald_Head", "Man"
    set_line(path, 2, " ".join(names) + " ")
    with raises_naming(path, "line 2", "expected the 40 CelebA attribute names",
                       "missing Bald, Male", "unexpected Bald_Head, Man"):
        read_celeba(celeba.root)


def test_header_with_attributes_in_another_order(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    names = list(CELEBA_ATTRIBUTES)
    names[0], names[1] = names[1], names[0]
    set_line(path, 2, " ".join(names))
    with raises_naming(path, "line 2", "another order", "position 1 is 'Arched_Eyebrows'",
                       "expected '5_o_Clock_Shadow'"):
        read_celeba(celeba.root)


def test_row_with_wrong_number_of_columns(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    row = path.read_text().split("\n")[4]  # line 5 = the third image
    set_line(path, 5, row.rsplit(" ", 1)[0])  # drop its last value
    with raises_naming(path, "line 5", "expected 41 columns", "got 40"):
        read_celeba(celeba.root)


def test_value_not_minus_one_or_one(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    values = path.read_text().split("\n")[6].split()  # line 7 = the fifth image
    values[1 + 15] = "0"  # Eyeglasses
    set_line(path, 7, " ".join(values))
    with raises_naming(path, "line 7", "expected -1 or 1 for Eyeglasses", "got '0'"):
        read_celeba(celeba.root)


def test_value_that_only_starts_like_a_valid_one(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    values = path.read_text().split("\n")[2].split()
    values[-1] = "-1.0"  # Young
    set_line(path, 3, " ".join(values))
    with raises_naming(path, "line 3", "expected -1 or 1 for Young", "got '-1.0'"):
        read_celeba(celeba.root)


def test_duplicate_filename(celeba):
    path = celeba.root / "list_attr_celeba.txt"
    row = path.read_text().split("\n")[3].replace("000002.jpg", "000001.jpg")
    set_line(path, 4, row)
    with raises_naming(path, "line 4", "000001.jpg is listed twice"):
        read_celeba(celeba.root)


# --------------------------------------------------------------------------------------------- list_eval_partition.txt


def test_partition_with_unknown_split_value(celeba):
    path = celeba.root / "list_eval_partition.txt"
    set_line(path, 4, "000004.jpg 3")
    with raises_naming(path, "line 4", "expected split 0 (train), 1 (valid) or 2 (test)", "got '3'"):
        read_celeba(celeba.root)


def test_partition_row_with_wrong_number_of_columns(celeba):
    path = celeba.root / "list_eval_partition.txt"
    set_line(path, 2, "000002.jpg")
    with raises_naming(path, "line 2", "expected 2 columns", "got 1"):
        read_celeba(celeba.root)


def test_image_with_attributes_but_no_split(celeba):
    path = celeba.root / "list_eval_partition.txt"
    set_line(path, 3, None)
    with raises_naming(path, "expected every image of list_attr_celeba.txt to have a split", "1 missing: 000003.jpg"):
        read_celeba(celeba.root)


def test_image_with_split_but_no_attributes(celeba):
    path = celeba.root / "list_eval_partition.txt"
    path.write_text(path.read_text() + "000011.jpg 2\n")
    with raises_naming(celeba.root / "list_attr_celeba.txt",
                       "expected every image of list_eval_partition.txt to have attributes", "1 missing: 000011.jpg"):
        read_celeba(celeba.root)


def test_listed_images_absent_from_folder(celeba):
    for name in ("000002.jpg", "000005.jpg", "000006.jpg"):
        (celeba.root / "img_align_celeba" / name).unlink()
    with raises_naming(celeba.root / "img_align_celeba", "3 of 10 are absent", "000002.jpg, 000005.jpg, 000006.jpg"):
        read_celeba(celeba.root)


def test_many_absent_images_are_summarised(celeba):
    shutil.rmtree(celeba.root / "img_align_celeba")
    (celeba.root / "img_align_celeba").mkdir()
    with raises_naming(celeba.root / "img_align_celeba", "10 of 10 are absent",
                       "000001.jpg, 000002.jpg, 000003.jpg, 000004.jpg, 000005.jpg, ... (10 in all)"):
        read_celeba(celeba.root)


# --------------------------------------------------------------------------------------------- images


def test_load_image_returns_the_pixels_as_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (218, 178), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")  # greyscale on disk, RGB out
    image = load_image(tmp_path / "grey.png")
    assert image.mode == "RGB" and image.size == (178, 218)
    np.testing.assert_array_equal(np.asarray(image), np.repeat(pixels[..., None], 3, axis=2))


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_load_image_truncated_jpeg(celeba, monkeypatch):
    path = celeba.root / "img_align_celeba" / "000003.jpg"
    truncate(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library may have set it
    with raises_naming(path, "cannot decode image", "truncated", "expected a complete JPEG or PNG file"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever had set it


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "000001.jpg"
    path.write_text("<html>403 Forbidden</html>")
    with raises_naming(path, "cannot decode image", "expected a complete JPEG or PNG file"):
        load_image(path)


def test_load_image_empty_file(tmp_path):
    path = tmp_path / "000001.jpg"
    path.write_bytes(b"")
    with raises_naming(path, "cannot decode image"):
        load_image(path)


def test_load_image_missing_file(tmp_path):
    path = tmp_path / "000001.jpg"
    with raises_naming(path, "image file not found"):
        load_image(path)


def test_check_images_passes_a_clean_folder(celeba, capsys):
    index = read_celeba(celeba.root)
    checked, skipped = check_images(index, progress=False)
    assert checked is index and skipped == []
    assert capsys.readouterr().out == ""


def test_check_images_raises_on_the_first_bad_image(celeba):
    truncate(celeba.root / "img_align_celeba" / "000003.jpg")
    (celeba.root / "img_align_celeba" / "000007.jpg").write_text("not a jpeg")
    with raises_naming(celeba.root / "img_align_celeba" / "000003.jpg", "cannot decode image"):
        check_images(read_celeba(celeba.root), progress=False)


def test_check_images_skips_bad_images_and_says_so_once(celeba, capsys):
    truncate(celeba.root / "img_align_celeba" / "000003.jpg")
    (celeba.root / "img_align_celeba" / "000007.jpg").write_text("not a jpeg")
    index = read_celeba(celeba.root)
    checked, skipped = check_images(index, skip_bad=True, progress=False)
    assert skipped == ["000003.jpg", "000007.jpg"]
    keep = [i for i in range(10) if i not in (2, 6)]
    assert checked.filenames == [celeba.filenames[i] for i in keep]
    np.testing.assert_array_equal(checked.attributes, celeba.attributes[keep])
    np.testing.assert_array_equal(checked.splits, celeba.splits[keep])
    out = capsys.readouterr().out
    assert out == (f"skipped 2 unreadable images of 10 in {celeba.root / 'img_align_celeba'}: "
                   f"000003.jpg, 000007.jpg\n")
