"""Two-object toy scenes: the exact scorer finds both objects, and a left-out object is missing."""

from __future__ import annotations

import numpy as np
import pytest

from hrv.errors import HRVInputError
from hrv.toy.pairs import PairScene, all_pair_scenes, neglect, objects_in, render_pair


def test_captions_and_scene_set():
    scenes = all_pair_scenes()
    assert len(scenes) == 4 * 3 * 3 * 2 * 4  # ordered pairs differing in colour and shape, 4 backdrops
    scene = PairScene(("red", "circle"), ("blue", "square"), "grass")
    assert scene.caption() == "a red circle and a blue square on grass"
    with pytest.raises(HRVInputError, match="differ"):
        PairScene(("red", "circle"), ("red", "square"), "grass")


def test_scorer_finds_both_objects_and_planted_neglect():
    scenes = all_pair_scenes()[::6]  # 48 scenes over every colour, shape and backdrop
    full = [render_pair(s, np.random.default_rng([0, i])) for i, s in enumerate(scenes)]
    found = [sorted(objects_in(im)) for im in full]
    exact = sum(f == sorted([s.first, s.second]) for f, s in zip(found, scenes, strict=True))
    assert exact / len(scenes) >= 0.95
    assert neglect(full, scenes)["both_present"] >= 0.95
    # planted: the second object left out of every image, the first out of none
    second_out = [
        render_pair(s, np.random.default_rng([0, i]), draw=(True, False)) for i, s in enumerate(scenes)
    ]
    rates = neglect(second_out, scenes)
    assert rates["second_missing"] == 1.0 and rates["first_missing"] <= 0.05
    assert rates["any_missing"] == 1.0
