"""The 10 Imagewoof breeds, in model output order (sorted WordNet ids).

The order is the trap: sorted wnids put n02093754 (Border terrier) before n02096294 (Australian
terrier). Every model, card and report uses this one table.
"""

from __future__ import annotations

WNIDS: tuple[str, ...] = (
    "n02086240",
    "n02087394",
    "n02088364",
    "n02089973",
    "n02093754",
    "n02096294",
    "n02099601",
    "n02105641",
    "n02111889",
    "n02115641",
)

BREEDS: dict[str, str] = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}

# Row of each breed in the standard 1000-class ImageNet-1k head (sorted-wnid order).
IMAGENET_INDEX: dict[str, int] = {
    "n02086240": 155,
    "n02087394": 159,
    "n02088364": 162,
    "n02089973": 167,
    "n02093754": 182,
    "n02096294": 193,
    "n02099601": 207,
    "n02105641": 229,
    "n02111889": 258,
    "n02115641": 273,
}

IMAGENET_ROWS: list[int] = [IMAGENET_INDEX[w] for w in WNIDS]


def breed_name(wnid: str) -> str:
    return BREEDS[wnid]


def classes() -> list[dict[str, str]]:
    """Classes in output order, as stored in model cards."""
    return [{"wnid": w, "breed": BREEDS[w]} for w in WNIDS]
