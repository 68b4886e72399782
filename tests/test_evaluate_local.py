"""The local backend samples as the chat completions API does: temperature 0 is greedy, top_p without a top-k cut,
n answers per question, and the frequency and presence penalties with the API's formula."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the local backend's packages are not installed (pip install -e '.[local]')")

from transformers import LlamaForCausalLM  # noqa: E402

from configs import SamplingConfig  # noqa: E402
from finetune.local.inference import LocalModels, ModelRef, Penalties  # noqa: E402
from test_local_backend import offline_hub, tiny_model  # noqa: E402,F401  (shared fixtures)

QUESTION = [{"role": "user", "content": "주제 3 안내 관련 내용을 알려줘."}]


def test_penalties_lower_each_generated_tokens_logit_by_count_and_presence_not_the_prompts():
    input_ids = torch.tensor([[4, 4, 5, 5, 7], [4, 4, 9, 9, 9]])  # two prompt tokens, then the answer so far
    scores = torch.zeros(2, 10)
    out = Penalties(prompt_length=2, frequency=0.5, presence=1.0)(input_ids, scores)
    expected = torch.zeros(2, 10)
    expected[0, 5] = -(2 * 0.5 + 1.0)
    expected[0, 7] = -(1 * 0.5 + 1.0)
    expected[1, 9] = -(3 * 0.5 + 1.0)
    assert torch.equal(out, expected)  # token 4, only in the prompt, is not penalised
    assert torch.equal(Penalties(2, -1.0, 0.0)(input_ids, scores)[1, 9], torch.tensor(3.0))  # below 0: encourages


@pytest.fixture
def generate_calls(monkeypatch) -> list[dict]:
    """Every `generate` call's settings and output rows (the answer part)."""
    calls: list[dict] = []
    original = LlamaForCausalLM.generate

    def spy(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls.append({**kwargs, "answers": output[:, kwargs["input_ids"].shape[1]:].tolist()})
        return output

    monkeypatch.setattr(LlamaForCausalLM, "generate", spy)
    return calls


def test_local_answers_follow_every_sampling_setting(tiny_model, generate_calls):  # noqa: F811
    models, ref = LocalModels(), ModelRef(str(tiny_model))

    greedy = models.chat(ref, QUESTION, sampling=SamplingConfig(n=3, max_tokens=8))
    assert len(greedy) == 3 and len({r.text for r in greedy}) == 1  # one greedy answer, handed out three times
    (call,) = generate_calls
    assert call["do_sample"] is False and call["repetition_penalty"] == 1.0 and call["max_new_tokens"] == 8
    assert "num_return_sequences" not in call and "logits_processor" not in call

    torch.manual_seed(0)
    sampled = models.chat(ref, QUESTION, sampling=SamplingConfig(n=3, temperature=1.5, top_p=0.9, max_tokens=8,
                                                                 frequency_penalty=0.5, presence_penalty=-0.5))
    call = generate_calls[-1]
    assert {k: call[k] for k in ("do_sample", "temperature", "top_p", "top_k", "num_return_sequences",
                                 "repetition_penalty", "max_new_tokens")} == {
        "do_sample": True, "temperature": 1.5, "top_p": 0.9, "top_k": 0, "num_return_sequences": 3,
        "repetition_penalty": 1.0, "max_new_tokens": 8}
    (penalties,) = call["logits_processor"]
    assert penalties == Penalties(call["input_ids"].shape[1], 0.5, -0.5)
    assert len(sampled) == 3 and len({r.text for r in sampled}) > 1  # three draws, not one answer thrice
    assert all(r.completion_tokens <= 8 and r.finish_reason in ("stop", "length") for r in sampled)


def test_the_penalties_change_what_the_local_model_answers(tiny_model, generate_calls):  # noqa: F811
    models, ref = LocalModels(), ModelRef(str(tiny_model))
    models.chat(ref, QUESTION, sampling=SamplingConfig(max_tokens=12))
    models.chat(ref, QUESTION, sampling=SamplingConfig(max_tokens=12, frequency_penalty=2, presence_penalty=2))
    plain, penalised = (call["answers"][0] for call in generate_calls)
    assert len(set(plain)) < len(plain)  # the random tiny model repeats itself when left alone
    assert len(set(penalised)) == len(penalised)  # a token already said costs 4 logits: none comes twice
