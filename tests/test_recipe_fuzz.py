"""Random YAML trees never crash the recipe or merge-config loaders with anything but their
own error type (or succeed)."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smora_cli.errors import RecipeError
from smora_cli.merging.config import merge_config_from_dict
from smora_cli.recipe import SECTIONS, recipe_from_dict

KEYS = sorted(
    {
        *SECTIONS,
        "name",
        "source",
        "method",
        "r",
        "k",
        "expert_rank",
        "lr",
        "max_steps",
        "strategy",
        "cap",
        "text",
        "labels",
        "metric",
        "models",
        "adapter",
        "merge_method",
        "parameters",
        "output",
        "name_or_path",
        "kind",
    }
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "smora",
            "lora",
            "builtin:sentiment",
            "glue:cola",
            "1e-4",
            "all-linear",
            "classifier",
            "more",
            "capped",
            "-1",
        ]
    ),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5
        ),
    ),
    max_leaves=30,
)
overrides = st.lists(
    st.one_of(
        st.builds(
            lambda k, v: f"{k}={v}",
            st.sampled_from(
                ["train.lr", "adapter.k", "tasks.0.name", "model", "mixing.cap", "a.b.c", "tasks.9"]
            ),
            st.text(max_size=8),
        ),
        st.text(max_size=10),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, items=overrides)
def test_recipe_loader_only_raises_recipe_errors(tree, items):
    try:
        recipe_from_dict(tree, items, source="fuzz.yaml")
    except RecipeError as e:
        assert str(e).startswith("fuzz.yaml")


@settings(max_examples=300, deadline=None)
@given(tree=trees)
def test_yaml_round_trip_of_random_trees(tree):
    """What the loader sees from a file is what yaml.safe_dump wrote (sanity of the strategy)."""
    try:
        recipe_from_dict(yaml.safe_load(yaml.safe_dump(tree)), source="f")
    except RecipeError:
        pass


@settings(max_examples=200, deadline=None)
@given(tree=trees)
def test_merge_config_loader_only_raises_recipe_errors(tree):
    try:
        merge_config_from_dict(tree, source="merge.yaml", check_paths=False)
    except RecipeError:
        pass


VALID = {
    "model": {"name_or_path": "m", "kind": "classifier"},
    "adapter": {"method": "smora", "r": 8, "k": 2},
    "tasks": [{"name": "t", "source": "builtin:sentiment"}],
    "mixing": {"strategy": "temperature", "temperature": 2.0},
    "train": {"max_steps": 10, "lr": 1e-3},
    "eval": {"split": "validation"},
}


@st.composite
def mutated_recipes(draw):
    """A valid recipe with random fields replaced: reaches the per-field and cross checks."""
    recipe = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(VALID)))
        value = draw(trees)
        if section == "tasks":
            key = draw(
                st.sampled_from(
                    [
                        "name",
                        "source",
                        "text",
                        "labels",
                        "metric",
                        "type",
                        "prompt",
                        "splits",
                        "max_train_examples",
                    ]
                )
            )
            recipe["tasks"][0][key] = value
        else:
            fields = sorted(recipe[section]) + ["expert_rank", "cap", "batch_size", "pooling"]
            recipe[section][draw(st.sampled_from(fields))] = value
    return recipe


@settings(max_examples=400, deadline=None)
@given(recipe=mutated_recipes())
def test_mutated_valid_recipes_only_raise_recipe_errors(recipe):
    try:
        recipe_from_dict(recipe, source="fuzz.yaml")
    except RecipeError:
        pass
