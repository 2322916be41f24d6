"""Recipe class lists, as data, one place each.

Every recipe maps source labels to our class folders. Matching goes through
``manifests.source_lists.class_key`` (lowercase, punctuation runs -> one space), so the seed's
unpunctuated spelling ``"bee wasp etc. buzzing"`` matches VGGSound's ``"bee, wasp, etc. buzzing"``.

Folder names are ``folder_name(display)`` of each class's display name (DESIGN section 2 for
AVSync15, the seed's spelling for VGGSS / Landscape). Note: ``folder_name`` of the raw
VGGSound label ``"playing violin, fiddle"`` is ``"playing_violin__fiddle"``, but the AVSync15
class is displayed ``"playing violin fiddle"`` (no comma), so its folder is
``"playing_violin_fiddle"``; the label reaches it through class_key, not through folder_name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from manifests.source_lists import class_key, folder_name


@dataclass(frozen=True)
class RecipeClass:
    display: str                     # class as the recipe names it (also the text prompt)
    source_labels: tuple[str, ...]   # source labels (VGGSound spelling) that feed this class

    @property
    def folder(self) -> str:
        return folder_name(self.display)


# AVSync15 (seed 003 section 5.2, manual curation; names per DESIGN section 2).
# Assumptions where the AVSync15 name is not a VGGSound label (documented, not in the seed):
#   baby babbling crying  <- "baby babbling" + "baby crying" (both VGGSS classes)
#   hammering             <- "hammering nails"
#   playing violin fiddle <- "playing violin, fiddle"
# Every other class is the VGGSound label of the same name.
AVSYNC15: tuple[RecipeClass, ...] = (
    RecipeClass("baby babbling crying", ("baby babbling", "baby crying")),
    RecipeClass("cap gun shooting", ("cap gun shooting",)),
    RecipeClass("chicken crowing", ("chicken crowing",)),
    RecipeClass("dog barking", ("dog barking",)),
    RecipeClass("frog croaking", ("frog croaking",)),
    RecipeClass("hammering", ("hammering nails",)),
    RecipeClass("lions roaring", ("lions roaring",)),
    RecipeClass("machine gun shooting", ("machine gun shooting",)),
    RecipeClass("playing cello", ("playing cello",)),
    RecipeClass("playing trombone", ("playing trombone",)),
    RecipeClass("playing trumpet", ("playing trumpet",)),
    RecipeClass("playing violin fiddle", ("playing violin, fiddle",)),
    RecipeClass("sharpen knife", ("sharpen knife",)),
    RecipeClass("striking bowling", ("striking bowling",)),
    RecipeClass("toilet flushing", ("toilet flushing",)),
)
#: per class: clips kept, train/test split (seed: 15 x 100, 90/10)
AVSYNC15_PER_CLASS = {"total": 100, "train": 90, "test": 10}

# VGGSS: the 149 classes of seed 003 section 5.2 ("Preliminary Curation"), verbatim in the
# seed's spelling ("eletric blender running" is VGGSound's own typo). Each is its own source
# label; matching to VGGSound's punctuated labels goes through class_key.
VGGSS_NAMES: tuple[str, ...] = (
    "alligators crocodiles hissing", "baby babbling", "baby crying", "baltimore oriole calling",
    "bee wasp etc. buzzing", "bird chirping tweeting", "bird squawking", "bird wings flapping",
    "bowling impact", "bull bellowing", "cap gun shooting", "car passing by",
    "cat caterwauling", "cat growling", "cat hissing", "cat meowing", "cat purring",
    "cattle bovinae cowbell", "chainsawing trees", "cheetah chirrup", "chicken clucking",
    "chicken crowing", "child singing", "child speech kid speaking", "children shouting",
    "chipmunk chirping", "chopping food", "crow cawing", "cutting hair with electric trimmers",
    "dinosaurs bellowing", "dog barking", "dog bow-wow", "dog growling", "dog whimpering",
    "door slamming", "driving motorcycle", "duck quacking", "eagle screaming",
    "electric grinder grinding", "elephant trumpeting", "eletric blender running",
    "female singing", "female speech woman speaking", "firing cannon", "firing muskets",
    "forging swords", "fox barking", "francolin calling", "frog croaking", "goat bleating",
    "golf driving", "goose honking", "hammering nails", "helicopter", "horse clip-clop",
    "horse neighing", "lions growling", "lions roaring", "lip smacking",
    "machine gun shooting", "male singing", "male speech man speaking", "missile launch",
    "mouse clicking", "mouse pattering", "mouse squeaking", "opening or closing car doors",
    "opening or closing car electric windows", "otter growling", "owl hooting",
    "parrot talking", "penguins braying", "people babbling", "people belly laughing",
    "people burping", "people cheering", "people clapping", "people coughing",
    "people eating apple", "people eating crisps", "people finger snapping",
    "people gargling", "people giggling", "people nose blowing", "people running",
    "people screaming", "people shuffling", "people slapping", "people slurping",
    "people sneezing", "people sniggering", "people sobbing", "people whispering",
    "people whistling", "pigeon dove cooing", "plastic bottle crushing", "playing accordion",
    "playing acoustic guitar", "playing banjo", "playing bass drum", "playing bass guitar",
    "playing cello", "playing drum kit", "playing electric guitar",
    "playing electronic organ", "playing flute", "playing french horn",
    "playing hammond organ", "playing harmonica", "playing harp", "playing harpsichord",
    "playing oboe", "playing piano", "playing snare drum", "playing steel guitar slide guitar",
    "playing table tennis", "playing tennis", "playing trombone", "playing trumpet",
    "playing violin fiddle", "playing volleyball", "popping popcorn", "race car auto racing",
    "rapping", "ripping paper", "rowboat canoe kayak rowing", "running electric fan",
    "sea lion barking", "sharpen knife", "shot football", "skateboarding", "skidding",
    "skiing", "sliding door", "snake hissing", "snake rattling", "striking bowling",
    "swimming", "tapping guitar", "toilet flushing", "tractor digging", "train horning",
    "train whistling", "turkey gobbling", "typing on computer keyboard",
    "typing on typewriter", "using sewing machines", "wind chime", "woodpecker pecking tree",
)
VGGSS: tuple[RecipeClass, ...] = tuple(RecipeClass(n, (n,)) for n in VGGSS_NAMES)

# Landscape (seed 004 section 4 and its supplement 001 Table 1): 9 scene classes from
# hand-picked YouTube videos, not VGGSound. Seed 004 writes "waterfall burbling" (also the
# VGGSound label), supplement 001's table "Waterfall Bubbling": both spellings map to one class.
LANDSCAPE: tuple[RecipeClass, ...] = (
    RecipeClass("thunderstorms", ("thunderstorms", "thunderstorm")),
    RecipeClass("waterfall burbling", ("waterfall burbling", "waterfall bubbling")),
    RecipeClass("volcano eruption", ("volcano eruption",)),
    RecipeClass("squishing water", ("squishing water",)),
    RecipeClass("wind noise", ("wind noise",)),
    RecipeClass("fire crackling", ("fire crackling",)),
    RecipeClass("raining", ("raining",)),
    RecipeClass("underwater bubbling", ("underwater bubbling",)),
    RecipeClass("splashing water", ("splashing water",)),
)
#: source format the Landscape recipe requires (seed 004 section 4, 001 section "Dataset Details")
LANDSCAPE_FORMAT = {
    "min_width": 1280, "min_height": 720,   # "at least 1280 x 720"
    "clip_seconds": 10,                      # non-overlapping 10-s clips
    "clips_per_video": 10,                   # 928 videos -> 9,280 clips
    "overlap": False,
}
#: clips per class in the released dataset (seed 001 Table 1, "Sum" row; 9,280 in all)
LANDSCAPE_CLIPS_PER_CLASS = {
    "thunderstorms": 280, "waterfall_burbling": 270, "volcano_eruption": 60,
    "squishing_water": 1610, "wind_noise": 1835, "fire_crackling": 1365, "raining": 1825,
    "underwater_bubbling": 260, "splashing_water": 1775,
}

RECIPES: dict[str, tuple[RecipeClass, ...]] = {
    "avsync15": AVSYNC15, "vggss": VGGSS, "landscape": LANDSCAPE,
}


def recipe_class_list(name: str) -> tuple[RecipeClass, ...]:
    key = name.strip().lower()
    if key not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[key]


def recipe_classes(name: str) -> dict[str, str]:
    """``class_key(label) -> class folder`` for a recipe ('avsync15', 'vggss', 'landscape').

    Keys cover each class's source labels and its display name (so lists that already use
    our folder names, like AVSync15's, match too). A key claimed by two classes is an error.
    """
    out: dict[str, str] = {}
    for rc in recipe_class_list(name):
        for label in (*rc.source_labels, rc.display):
            k = class_key(label)
            if out.setdefault(k, rc.folder) != rc.folder:
                raise ValueError(f"recipe {name}: {label!r} maps to both {out[k]} and {rc.folder}")
    return out


def recipe_folders(name: str) -> list[str]:
    """The recipe's class folders, in list order (class index = position)."""
    return [rc.folder for rc in recipe_class_list(name)]


def class_order(recipe_classes: str | None, names: Iterable[str | None] = ()) -> list[str]:
    """Class index order of a run: the recipe's class folders when it names a class list,
    then every other of ``names``, sorted (the one rule for shard labels and the balance's
    class list)."""
    base = recipe_folders(recipe_classes) if recipe_classes else []
    return base + sorted({n for n in names if n} - set(base))
