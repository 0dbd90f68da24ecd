"""The shared training recipes are typed and name only TrainConfig's fields, so a recipe cannot
carry a misspelt setting that a run would silently ignore."""
from __future__ import annotations

import dataclasses

import pytest

from crm_core import recipes
from crm_core.train_config import TrainConfig


@pytest.mark.parametrize("recipe", [recipes.RESULTS, recipes.CRM, recipes.EFFICIENTNET_LENGTH],
                         ids=["results", "crm", "efficientnet_length"])
def test_every_recipe_field_is_a_train_config_field(recipe) -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(recipe.fields()) <= names, set(recipe.fields()) - names
    # and a TrainConfig built from it holds those values
    config = TrainConfig(**{**recipes.RESULTS.fields(), **recipe.fields(), "name": "probe"})
    assert all(getattr(config, k) == v for k, v in recipe.fields().items())


def test_recipes_are_frozen_and_say_their_cam_grid() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipes.RESULTS.image_size = 224  # type: ignore[misc]
    assert recipes.RESULTS.cam_size == 7  # 112 px at output stride 16
