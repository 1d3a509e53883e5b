"""The CelebA attribute vocabulary: the 40 names in file order, their real positive rates, and the subset facegen
conditions on (the attributes SynthFaces draws, so that asking for one visibly changes the face)."""

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling",
    "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)

# Percent of CelebA's 202,599 images with the attribute, same order as CELEBA_ATTRIBUTES.
CELEBA_POSITIVE_PERCENT: dict[str, float] = dict(zip(CELEBA_ATTRIBUTES, (
    11.1, 26.7, 51.3, 20.5, 2.2, 15.2, 24.1, 23.5, 23.9, 14.8, 5.1, 20.5, 14.2, 5.8, 4.7, 6.5, 6.3, 4.2, 38.7, 45.5,
    41.7, 48.3, 4.2, 11.5, 83.5, 28.4, 4.3, 27.7, 8.0, 6.6, 5.7, 48.2, 20.8, 32.0, 18.9, 4.8, 47.2, 12.3, 7.3, 77.4,
)))

# The attributes the GPT is conditioned on, in CelebA order. SynthFaces renders each of them visibly; the rest it
# writes as -1. Keep this list identical across profiles so sequence formats (and nbval outputs) never change.
CONDITIONING_ATTRIBUTES: tuple[str, ...] = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Male",
    "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Rosy_Cheeks", "Smiling", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Young",
)

assert len(CELEBA_ATTRIBUTES) == 40
assert all(name in CELEBA_ATTRIBUTES for name in CONDITIONING_ATTRIBUTES)
assert list(CONDITIONING_ATTRIBUTES) == sorted(CONDITIONING_ATTRIBUTES, key=CELEBA_ATTRIBUTES.index)


def attribute_index(name: str) -> int:
    """Column of `name` in CelebA's attribute file; one clear error listing the valid names otherwise."""
    try:
        return CELEBA_ATTRIBUTES.index(name)
    except ValueError:
        raise KeyError(f"unknown CelebA attribute {name!r}; valid names: {', '.join(CELEBA_ATTRIBUTES)}") from None


def requests_from_rows(rows, names: tuple[str, ...] = CONDITIONING_ATTRIBUTES) -> list[dict[str, int]]:
    """CelebA attribute rows (N, 40) of 1 / -1 -> N requests {name: 1 or 0} over `names`: ask a sampler for the
    attribute combinations real faces have (notebook 06, benchmarks/eval_guidance.py)."""
    columns = [attribute_index(name) for name in names]
    return [{name: int(row[column] == 1) for name, column in zip(names, columns)} for row in rows]
