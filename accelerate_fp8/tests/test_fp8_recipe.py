"""FP8Recipe: defaults, the dict form, and clear errors for unknown fields and bad values."""

from __future__ import annotations

import pytest

from accelerate_core import Accelerator, ConfigurationError
from accelerate_fp8 import FP8Recipe
from accelerate_fp8 import recipe as recipe_module

recipe_from_options = recipe_module.recipe_from_options


def test_fp8_recipe_defaults_are_torchao_tensorwise_hybrid_with_bf16_elsewhere():
    recipe = FP8Recipe()
    assert recipe.backend == "torchao" and recipe.scaling == "tensorwise"
    assert recipe.autocast_dtype == "bf16"
    assert recipe.effective_fp8_format == "HYBRID"
    assert recipe.skip_first_last and recipe.exclude == () and recipe.module_filter is None
    assert FP8Recipe(scaling="rowwise").effective_fp8_format == "E4M3"  # torchao's rowwise recipe
    assert FP8Recipe(scaling="rowwise", fp8_format="hybrid").effective_fp8_format == "HYBRID"


def test_fp8_recipe_normalises_names_and_aliases():
    recipe = FP8Recipe(backend="TransformerEngine", fp8_format="e4m3", amax_compute_algo="MAX")
    assert (recipe.backend, recipe.fp8_format, recipe.amax_compute_algo) == ("te", "E4M3", "max")
    assert FP8Recipe(backend="MS-AMP", opt_level="o1").opt_level == "O1"
    assert FP8Recipe(exclude=["lm_head"]).exclude == ("lm_head",)


def test_fp8_recipe_from_options_accepts_recipe_dict_or_nothing():
    assert recipe_from_options({}) == FP8Recipe()
    assert recipe_from_options({"fp8": {"backend": "te", "margin": 2}}) == FP8Recipe("te", margin=2)
    recipe = FP8Recipe(scaling="rowwise")
    assert recipe_from_options({"fp8": recipe, "autocast": {"cache_enabled": False}}) is recipe


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "apex"}, "valid values: 'torchao', 'te', 'msamp'"),
        ({"fp8_format": "E5M2"}, "valid values: 'HYBRID', 'E4M3'"),
        ({"autocast_dtype": "fp16"}, "valid values: 'bf16', 'fp32'"),
        ({"scaling": "blockwise"}, "valid values: 'tensorwise', 'rowwise'"),
        ({"backend": "te", "amax_compute_algo": "mean"}, "'max', 'most_recent'"),
        ({"backend": "msamp", "opt_level": "O3"}, "valid values: 'O1', 'O2'"),
        ({"backend": "te", "margin": -1}, "margin must be an integer >= 0"),
        ({"backend": "te", "amax_history_len": 0}, "amax_history_len must be an integer >= 1"),
        ({"skip_first_last": "yes"}, "skip_first_last must be True or False"),
        ({"exclude": "lm_head"}, "list of name fragments"),
        ({"module_filter": 3}, "must be a callable"),
    ],
)
def test_fp8_recipe_bad_values_name_the_valid_ones(kwargs, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        FP8Recipe(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "owner"),
    [
        ({"margin": 1}, "backend='te'"),
        ({"amax_history_len": 16}, "backend='te'"),
        ({"opt_level": "O1"}, "backend='msamp'"),
        ({"backend": "te", "scaling": "rowwise"}, "backend='torchao'"),
        ({"backend": "msamp", "fsdp_fp8_all_gather": True}, "backend='torchao'"),
    ],
)
def test_fp8_recipe_field_of_another_backend_is_an_error_not_ignored(kwargs, owner):
    with pytest.raises(ConfigurationError, match=f"applies to {owner} only"):
        FP8Recipe(**kwargs)


def test_fp8_recipe_inconsistent_combinations_are_errors():
    with pytest.raises(ConfigurationError, match="needs scaling='tensorwise'"):
        FP8Recipe(scaling="rowwise", fsdp_fp8_all_gather=True)
    with pytest.raises(ConfigurationError, match="MS-AMP always casts"):
        FP8Recipe(backend="msamp", fp8_format="E4M3")


def test_fp8_recipe_unknown_dict_field_lists_valid_fields_and_suggests():
    with pytest.raises(ConfigurationError) as info:
        recipe_from_options({"fp8": {"backend": "te", "amax_histroy_len": 16}})
    message = str(info.value)
    assert "'amax_histroy_len' (did you mean 'amax_history_len'?)" in message
    assert "valid fields: backend, fp8_format, autocast_dtype" in message


def test_fp8_recipe_fields_at_top_level_of_precision_options_are_an_error():
    with pytest.raises(ConfigurationError, match="put them under the 'fp8' key"):
        recipe_from_options({"backend": "te"})
    with pytest.raises(ConfigurationError, match="must be an FP8Recipe or a dict"):
        recipe_from_options({"fp8": "te"})


def test_fp8_recipe_errors_surface_at_accelerator_creation():
    with pytest.raises(ConfigurationError, match="unknown fp8 recipe field"):
        Accelerator(mixed_precision="fp8", cpu=True, precision_options={"fp8": {"scale": "x"}})


def test_fp8_recipe_replace_validates_again():
    recipe = FP8Recipe().replace(scaling="rowwise")
    assert recipe.scaling == "rowwise"
    with pytest.raises(ConfigurationError):
        recipe.replace(backend="nope")
