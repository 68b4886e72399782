from datetime import date

import pytest

from configs.model_registry import ModelError, check, lookup


@pytest.mark.parametrize("name", ["gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0613",
                                  "gpt-4-0613", "gpt-4.1-nano-2025-04-14", "gpt-3.5-turbo"])
def test_retired_models_are_refused_with_the_date(name):
    with pytest.raises(ModelError, match="retired on 2026-10-23"):
        check(name, on=date(2026, 11, 21))


def test_model_retiring_within_60_days_warns_with_the_date():
    spec, warnings = check("gpt-4o-mini-2024-07-18", on=date(2026, 11, 21))
    assert spec.max_tokens_per_example == 65_536
    assert any("retires on 2027-01-14" in w for w in warnings)
    assert any("no new fine-tuning jobs from 2027-01-06" in w for w in warnings)


def test_no_warning_far_from_the_dates():
    assert check("gpt-4.1-2025-04-14", on=date(2026, 6, 1))[1] == []


def test_after_the_cutoff_it_says_no_new_jobs():
    _, warnings = check("gpt-4o-2024-08-06", on=date(2027, 1, 8))
    assert any("no new fine-tuning jobs since 2027-01-06" in w for w in warnings)
    with pytest.raises(ModelError, match="retired on 2027-01-14"):
        check("gpt-4o-2024-08-06", on=date(2027, 1, 14))


def test_fine_tuned_model_inherits_its_base():
    spec = lookup("ft:gpt-4o-mini-2024-07-18:acme:guide:abc123")
    assert spec.name == "gpt-4o-mini-2024-07-18" and spec.encoding == "o200k_base"


@pytest.mark.parametrize("name,encoding,limit,fmt", [
    ("gpt-4o-2024-08-06", "o200k_base", 65_536, "chat"),
    ("gpt-4.1-mini-2025-04-14", "o200k_base", 65_536, "chat"),
    ("gpt-3.5-turbo-0125", "cl100k_base", 16_385, "chat"),
    ("gpt-3.5-turbo-0613", "cl100k_base", 4_096, "chat"),
    ("babbage-002", "cl100k_base", 16_384, "prompt_completion"),
    ("davinci-002", "cl100k_base", 16_384, "prompt_completion"),
])
def test_registry_knows_encoding_limit_and_format(name, encoding, limit, fmt):
    spec = lookup(name)
    assert (spec.encoding, spec.max_tokens_per_example, spec.format) == (encoding, limit, fmt)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ModelError, match="unknown model 'gpt-5'.*gpt-4o-mini-2024-07-18"):
        lookup("gpt-5")


def test_a_dataset_trained_locally_is_not_bound_by_openai_dates():
    spec, warnings = check("gpt-4o-mini-2024-07-18", on=date(2027, 3, 1), hosted=False)
    assert spec.encoding == "o200k_base" and warnings == []


def test_a_fine_tune_is_judged_by_its_base_and_the_messages_name_the_base():
    from configs.model_registry import base_of, without_checkpoint

    tuned = "ft:gpt-4o-mini-2024-07-18:acme:guide:abc123"
    spec, warnings = check(tuned, on=date(2026, 11, 21))
    assert (spec.name, spec.encoding, spec.max_tokens_per_example) == ("gpt-4o-mini-2024-07-18", "o200k_base", 65_536)
    assert f"base model gpt-4o-mini-2024-07-18 of {tuned} retires on 2027-01-14 (54 days left); plan a move to " \
           "another model or backend" in warnings
    with pytest.raises(ModelError, match=r"^base model gpt-4.1-nano-2025-04-14 of ft:gpt-4.1-nano:acme::x was retired "
                                         r"on 2026-10-23; choose one of: "):
        check("ft:gpt-4.1-nano:acme::x", on=date(2026, 11, 21))
    assert lookup("ft:gpt-3.5-turbo-0613:acme::x:ckpt-step-80").max_tokens_per_example == 4_096
    assert base_of(f"{tuned}:ckpt-step-80") == "gpt-4o-mini-2024-07-18" and base_of("gpt-4o-mini") is None
    assert without_checkpoint(f"{tuned}:ckpt-step-80") == tuned == without_checkpoint(tuned)
