"""SynthFaces: CelebA's exact folder layout, determinism, CelebA-like attribute statistics, and that every
conditioning attribute visibly changes the face where it should."""

import numpy as np
import pytest
from PIL import Image

from facegen.attributes import CELEBA_ATTRIBUTES, CELEBA_POSITIVE_PERCENT, CONDITIONING_ATTRIBUTES
from facegen.data.synthfaces import (
    covering_selection,
    generate,
    make_face,
    render_face,
    sample_attributes,
    save_labelled_grid,
    short_label,
    split_of,
)
from facegen.data.synthfaces import main as synthfaces_main

N = 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "celeba"
    summary = generate(out, N, seed=3, workers=1, progress=False)
    return out, summary


def read_lines(path):
    return path.read_text().split("\n")


# ------------------------------------------------------------------------------------------------ files and formats
def test_attribute_file_is_celeba_shaped(dataset):
    out, _ = dataset
    lines = read_lines(out / "list_attr_celeba.txt")
    assert lines[0] == str(N)
    assert lines[1] == " ".join(CELEBA_ATTRIBUTES) + " "  # the real file's trailing space
    rows = [line for line in lines[2:] if line]
    assert len(rows) == N and lines[-1] == ""  # one row per image, file ends with a newline
    for i, row in enumerate(rows):
        fields = row.split()
        assert fields[0] == f"{i + 1:06d}.jpg"
        assert len(fields) == 41 and set(fields[1:]) <= {"1", "-1"}
        expected = make_face(i, seed=3)[1]
        assert [int(v) for v in fields[1:]] == [expected[name] for name in CELEBA_ATTRIBUTES]


def test_partition_file_is_contiguous_80_10_10(dataset):
    out, summary = dataset
    rows = [line.split() for line in read_lines(out / "list_eval_partition.txt") if line]
    assert [name for name, _ in rows] == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    assert [int(split) for _, split in rows] == [0] * 16 + [1] * 2 + [2] * 2
    assert summary.split_counts == {"train": 16, "valid": 2, "test": 2}
    # CelebA-sized check of the rule: 2,000 images -> 1,600 / 200 / 200, ranges in order
    splits = [split_of(i, 2000) for i in range(2000)]
    assert np.bincount(splits).tolist() == [1600, 200, 200] and splits == sorted(splits)


def test_images_are_178x218_rgb_jpegs_matching_make_face(dataset):
    out, _ = dataset
    names = sorted(p.name for p in (out / "img_align_celeba").iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, N + 1)]  # and no temporary files left behind
    for i in (0, N - 1):
        with Image.open(out / "img_align_celeba" / names[i]) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (178, 218)
            decoded = np.asarray(image, float)
        drawn = np.asarray(make_face(i, seed=3)[0], float)
        assert np.abs(decoded - drawn).mean() < 3.0  # only JPEG loss (quality 95) between them


def test_summary_rates_and_text(dataset):
    out, summary = dataset
    values = np.array([[int(v) for v in line.split()[1:]] for line in read_lines(out / "list_attr_celeba.txt")[2:]
                       if line])
    for k, name in enumerate(CELEBA_ATTRIBUTES):
        assert summary.positive_percent[name] == pytest.approx(100 * np.mean(values[:, k] == 1))
    assert summary.n == N and summary.images_per_second == pytest.approx(N / summary.seconds)
    text = str(summary)
    assert "train 16, valid 2, test 2" in text and "images/s" in text
    for name in CONDITIONING_ATTRIBUTES:
        assert f"{CELEBA_POSITIVE_PERCENT[name]:.1f}" in next(line for line in text.splitlines()
                                                              if line.startswith(name + " "))


def test_workers_do_not_change_the_files(dataset, tmp_path):
    out, _ = dataset
    parallel = tmp_path / "parallel"
    generate(parallel, N, seed=3, workers=2, progress=False)
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        assert (parallel / name).read_bytes() == (out / name).read_bytes()
    for i in range(1, N + 1):
        name = f"img_align_celeba/{i:06d}.jpg"
        assert (parallel / name).read_bytes() == (out / name).read_bytes(), name


def test_regenerating_into_a_synthfaces_folder_replaces_it(tmp_path):
    out = tmp_path / "synth"
    generate(out, 12, seed=0, workers=1, progress=False)
    (out / "img_align_celeba" / ".000003.jpg.tmp4242").write_bytes(b"half")  # as an interrupted run leaves it
    generate(out, 10, seed=1, workers=1, progress=False)  # smaller: stale images 11, 12 must go
    assert sorted(p.name for p in (out / "img_align_celeba").iterdir()) == [f"{i:06d}.jpg" for i in range(1, 11)]
    assert read_lines(out / "list_attr_celeba.txt")[0] == "10"
    assert read_lines(out / "list_attr_celeba.txt")[2].split()[1:] == \
        [str(make_face(0, seed=1)[1][name]) for name in CELEBA_ATTRIBUTES]


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 9}, "n must be an integer >= 10"),
    ({"n": 12.0}, "n must be an integer >= 10"),
    ({"n": 12, "seed": -1}, "seed must be a non-negative integer"),
    ({"n": 12, "workers": 0}, "workers must be None or an integer >= 1"),
])
def test_generate_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", progress=False, **kwargs)


def test_generate_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not SynthFaces output.*notes.txt"):
        generate(tmp_path, 10, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is a file"):
        generate(tmp_path / "notes.txt", 10, progress=False)


# ------------------------------------------------------------------------------------------------------ determinism
def test_same_seed_and_index_give_identical_pixels():
    first, attributes = make_face(7, seed=11)
    second, again = make_face(7, seed=11)
    assert attributes == again
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_other_seed_or_index_gives_another_face():
    base = np.asarray(make_face(7, seed=11)[0], float)
    assert np.abs(base - np.asarray(make_face(7, seed=12)[0], float)).mean() > 5
    assert np.abs(base - np.asarray(make_face(8, seed=11)[0], float)).mean() > 5


def test_sample_attributes_draws_a_fixed_amount_of_randomness():
    # so the style drawn after the attributes does not depend on which attributes came out
    for state in range(5):
        rng, reference = np.random.default_rng(state), np.random.default_rng(state)
        sample_attributes(rng)
        reference.random(16)
        assert rng.random() == reference.random()


# ---------------------------------------------------------------------------------------------------- statistics
@pytest.fixture(scope="module")
def samples():
    rows = [sample_attributes(np.random.default_rng((1, i))) for i in range(2000)]
    return {name: np.array([row[name] == 1 for row in rows]) for name in CELEBA_ATTRIBUTES}


def test_unrendered_attributes_are_always_minus_one(samples):
    for name in set(CELEBA_ATTRIBUTES) - set(CONDITIONING_ATTRIBUTES):
        assert not samples[name].any(), name


def test_attributes_respect_celeba_correlations(samples):
    s = samples
    male = s["Male"]
    assert not (s["Mustache"] & ~male).any()
    assert not (~s["No_Beard"] & ~male).any()  # beards only on men
    assert not (s["Mustache"] & s["No_Beard"]).any()  # a drawn moustache means No_Beard = -1
    assert not (s["Bald"] & (~male | s["Bangs"] | s["Wearing_Hat"])).any()
    colours = s["Black_Hair"].astype(int) + s["Blond_Hair"] + s["Brown_Hair"] + s["Gray_Hair"]
    assert colours.max() == 1 and (colours == 0).mean() > 0.2  # some faces have none (red / auburn)
    assert s["Gray_Hair"][~s["Young"]].mean() > 5 * s["Gray_Hair"][s["Young"]].mean()
    assert s["Mouth_Slightly_Open"][s["Smiling"]].mean() > s["Mouth_Slightly_Open"][~s["Smiling"]].mean() + 0.3
    for mostly_female in ("Wearing_Lipstick", "Rosy_Cheeks", "Wearing_Earrings"):
        assert s[mostly_female][~male].mean() > 5 * s[mostly_female][male].mean(), mostly_female


@pytest.mark.parametrize("name", CONDITIONING_ATTRIBUTES)
def test_rates_are_close_to_celeba(samples, name):
    rate = 100 * samples[name].mean()
    celeba = CELEBA_POSITIVE_PERCENT[name]
    assert abs(rate - celeba) < max(1.5, 0.2 * celeba) + 2.0, (rate, celeba)  # 2,000 samples: ~1 point noise


# ------------------------------------------------------------------------------------------------ what gets drawn
WOMAN = {name: -1 for name in CELEBA_ATTRIBUTES} | {"Young": 1, "No_Beard": 1, "Brown_Hair": 1}
MAN = WOMAN | {"Male": 1}
BEARDED = MAN | {"No_Beard": -1}

ROWS, COLS = np.mgrid[0:218, 0:178]
MOUTH = (ROWS >= 138) & (ROWS < 170) & (COLS >= 58) & (COLS < 120)
HAIR = (ROWS < 135) & (COLS >= 30) & (COLS < 148)
# (attribute, base attributes, region where flipping it should change pixels); None = anywhere on the face
REGIONS = {
    "Bald": (MAN, ROWS < 118),
    "Bangs": (WOMAN, (ROWS >= 60) & (ROWS < 112)),
    "Black_Hair": (MAN | {"Brown_Hair": -1}, HAIR),
    "Blond_Hair": (MAN | {"Brown_Hair": -1}, HAIR),
    "Brown_Hair": (MAN, HAIR),
    "Gray_Hair": (MAN | {"Brown_Hair": -1}, HAIR),
    "Wearing_Hat": (WOMAN, ROWS < 100),
    "Eyeglasses": (WOMAN, (ROWS >= 98) & (ROWS < 128)),
    "Smiling": (WOMAN, MOUTH),
    "Mouth_Slightly_Open": (WOMAN, MOUTH),
    "Wearing_Lipstick": (WOMAN, MOUTH),
    "Mustache": (BEARDED, MOUTH),
    "No_Beard": (MAN, (ROWS >= 115) & (ROWS < 195) & (COLS >= 35) & (COLS < 143)),
    "Rosy_Cheeks": (WOMAN, (ROWS >= 122) & (ROWS < 156) & (COLS >= 50) & (COLS < 128)),
    "Wearing_Earrings": (WOMAN, (ROWS >= 115) & (ROWS < 155) & ((COLS < 62) | (COLS >= 116))),
    "Pale_Skin": (WOMAN, None),
    "Young": (MAN, None),
    "Male": (WOMAN, None),
}
FACE = (ROWS >= 45) & (ROWS < 200) & (COLS >= 35) & (COLS < 143)


def flip_difference(base: dict, name: str, seed: int) -> np.ndarray:
    """Per-pixel |difference| (largest over R, G, B, so a change of hue counts too) between the face with `name` on
    and off, everything else (the rng too) the same."""
    on, off = dict(base), dict(base)
    on[name], off[name] = 1, -1
    images = [np.asarray(render_face(a, np.random.default_rng(seed)), float) for a in (on, off)]
    return np.abs(images[0] - images[1]).max(axis=2)


def test_every_conditioning_attribute_has_a_region_test():
    assert set(REGIONS) == set(CONDITIONING_ATTRIBUTES)


@pytest.mark.parametrize("name", CONDITIONING_ATTRIBUTES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipping_an_attribute_changes_its_region(name, seed):
    base, region = REGIONS[name]
    diff = flip_difference(base, name, seed)
    assert diff.max() > 0, "flipping changed nothing"
    if region is None:  # global attributes: the whole face changes clearly, the background much less
        assert diff[FACE].mean() > 4.0, diff[FACE].mean()
        assert diff[FACE].sum() / diff.sum() > 0.75
    else:  # local ones: a clear change, nearly all of it inside the expected region
        inside, outside = diff[region].mean(), diff[~region].mean()
        assert inside > 1.0 and (diff[region] > 30).sum() >= 15, (inside, (diff[region] > 30).sum())
        assert inside > 10 * outside, (inside, outside)
        assert diff[region].sum() / diff.sum() > 0.9


def test_render_face_draws_any_combination_even_contradictory_ones():
    everything = {name: 1 for name in CELEBA_ATTRIBUTES}  # bald with bangs and a hat, beard with No_Beard, ...
    nothing = {name: -1 for name in CELEBA_ATTRIBUTES}
    images = [render_face(a, np.random.default_rng(4)) for a in (everything, nothing)]
    assert all(image.size == (178, 218) and image.mode == "RGB" for image in images)
    assert np.abs(np.asarray(images[0], float) - np.asarray(images[1], float)).mean() > 10


def test_render_face_rejects_incomplete_or_bad_attributes():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="missing.*Smiling"):
        render_face({name: -1 for name in CONDITIONING_ATTRIBUTES if name != "Smiling"}, rng)
    with pytest.raises(ValueError, match="not 1/-1.*Male"):
        render_face(WOMAN | {"Male": 0}, rng)
    with pytest.raises(ValueError, match="unknown names.*Beard"):
        render_face(WOMAN | {"Beard": 1}, rng)


def test_make_face_rejects_negative_index():
    with pytest.raises(ValueError, match="index and seed must be >= 0"):
        make_face(-1)


# ---------------------------------------------------------------------------------------------------------- grid
def test_short_label_lists_positive_conditioning_attributes():
    attributes = MAN | {"Smiling": 1, "No_Beard": -1, "Attractive": 1}
    assert short_label(attributes).split() == ["brown", "male", "beard", "smile", "young"]


def test_save_labelled_grid_writes_a_png(dataset, tmp_path):
    out, _ = dataset
    path = save_labelled_grid(out, tmp_path / "grid.png", rows=2, cols=3, dpi=50)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (int(3 * 1.45 * 50), int(2 * 2.0 * 50))
        pixels = np.asarray(image.convert("L"), float)
    assert pixels.std() > 20  # faces were drawn, not a blank canvas
    items = [make_face(i) for i in range(2)]
    save_labelled_grid(items, tmp_path / "list.png", rows=1, cols=2, dpi=50)
    assert (tmp_path / "list.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="expected a SynthFaces/CelebA folder or a list"):
        save_labelled_grid([1, 2], tmp_path / "bad.png")
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_covering_selection_brings_in_rare_attributes():
    rows = [WOMAN] * 10
    rows[7] = WOMAN | {"Bald": 1}
    # Bald (rarest shown) pulls in row 7; brown and young then have 1 each and take row 0; row 1, 2 fill up.
    assert covering_selection(rows, 4) == [0, 1, 2, 7]
    assert covering_selection(rows, 2) == [0, 7]
    assert covering_selection(rows[:3], 8) == [0, 1, 2]  # fewer rows than places
    beards = [MAN] * 5 + [BEARDED]
    assert 5 in covering_selection(beards, 3)  # No_Beard counts when the beard is drawn (-1)


def test_main_generates_and_prints_the_summary(tmp_path, capsys):
    synthfaces_main([str(tmp_path / "out"), "-n", "10", "--seed", "2", "--workers", "1"])
    assert "SynthFaces: 10 images" in capsys.readouterr().out
    assert read_lines(tmp_path / "out" / "list_attr_celeba.txt")[0] == "10"
