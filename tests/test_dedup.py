"""Exact and near-duplicate answers are dropped before the split, naming the example they repeat."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from dataset_state import guide_pages, korean_paragraph, make_config, page, write_pages
from transforms.build import build
from transforms.dedup import Dedup, IntIndex, MinHasher, fingerprints, lsh_params, normalised, shingle_hashes
from transforms.example import Example
from transforms.stage import run_stages


def example(n: int, answer: str, document: str | None = None, question: str = "q") -> Example:
    return Example(example_id=f"{n:016x}", document_id=document or f"doc{n}", url=f"http://h/{n}.html", source="s",
                   category="c", title="t", messages=[{"role": "user", "content": question},
                                                      {"role": "assistant", "content": answer}], tokens=10)


def run(examples, **kwargs):
    stage = Dedup(**{"exact": True, "near_threshold": 0.8, **kwargs})
    drops = []
    out, logs = run_stages(examples, [stage], on_drop=drops.append)
    return [e.example_id for e in out], drops, stage


LONG = "\n\n".join(korean_paragraph(i, 5) for i in range(3))


def test_exact_duplicate_after_normalisation_is_dropped_naming_the_original():
    kept, drops, stage = run([example(1, LONG), example(2, "  " + LONG.replace(" ", "   ").upper() + "\n")])
    assert kept == [f"{1:016x}"]
    assert drops[0].reason == "duplicate_exact" and drops[0].data["duplicate_of"] == f"{1:016x}"
    assert stage.summary()["exact"] == 1


def test_korean_near_duplicate_is_dropped_and_a_different_page_is_kept():
    near = LONG.replace("합니다.", "합니다!", 2) + " 추가된 마지막 문장입니다."
    other = "\n\n".join(korean_paragraph(100 + i, 5) for i in range(3))
    kept, drops, stage = run([example(1, LONG), example(2, near), example(3, other)])
    assert kept == [f"{1:016x}", f"{3:016x}"]
    [drop] = drops
    assert drop.reason == "duplicate_near" and drop.data["duplicate_of"] == f"{1:016x}"
    assert 0.8 <= drop.data["similarity"] <= 1
    assert stage.summary()["pairs"] == [{"example_id": f"{2:016x}", "duplicate_of": f"{1:016x}", "kind": "near",
                                         "similarity": drop.data["similarity"]}]


def test_near_pass_can_be_switched_off():
    near = LONG + " 추가된 문장."
    kept, drops, _ = run([example(1, LONG), example(2, near)], near_threshold=None)
    assert len(kept) == 2 and not drops


def test_questions_of_one_answer_are_not_duplicates_of_each_other():
    same = [example(1, LONG, "d", "q1"), example(2, LONG, "d", "q2"), example(3, LONG, "other", "q3")]
    kept, drops, _ = run(same)
    assert kept == [f"{1:016x}", f"{2:016x}"] and drops[0].data["duplicate_of"] == f"{1:016x}"


def test_fingerprints_of_an_empty_answer_are_compared_exactly_only():
    answers = [LONG, " \n "]
    (key, sig, bands), (empty_key, empty_sig, empty_bands) = fingerprints(answers, Dedup(near_threshold=0.8).near)
    assert sig is not None and len(bands) and (empty_sig, empty_bands) == (None, None)
    assert empty_key == fingerprints([""], None)[0][0] != key


def test_normalised_text_is_the_words_joined_by_one_space_whatever_the_whitespace():
    import sys

    assert [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() and c.isprintable()] == [" "]
    texts = ["", " ", "\n\n", "  Ａ  b\n\n\nC ", "탭\t과\r\n줄", "a\u3000b\xa0c\u2028d\x85e\x1cf", "Straße  ﬁne\u200b x",
             LONG, LONG.replace("\n\n", "\n \n   "), "a\x00  b"]
    for text in texts:
        assert normalised(text) == " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def test_signature_agrees_with_true_jaccard_of_character_shingles():
    a = normalised(LONG)
    b = normalised(LONG.replace("설정", "구성", 3))
    shingles = lambda t: {t[i:i + 5] for i in range(len(t) - 4)}
    true = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    hasher = MinHasher(256, 5)
    assert abs(MinHasher.similarity(hasher.signature(a), hasher.signature(b)) - true) < 0.08
    # datasketch's MinHash over the same shingle hashes estimates the same similarity
    hv_a, hv_b = shingle_hashes(a, 5), shingle_hashes(b, 5)
    ma, mb = MinHash(num_perm=256, hashfunc=int), MinHash(num_perm=256, hashfunc=int)
    ma.update_batch((hv_a >> np.uint64(32)).tolist())
    mb.update_batch((hv_b >> np.uint64(32)).tolist())
    assert abs(ma.jaccard(mb) - true) < 0.08


def test_int_index_keeps_the_first_value_across_merges():
    index = IntIndex(buffer=3)
    for key in [2**64 - 1, 5, 2**63 + 3, 5, 7, 9, 11]:
        index.add(key, key % 97)
    assert [index.get(k) for k in (2**64 - 1, 5, 2**63 + 3, 7, 9, 11, 12)] == [
        (2**64 - 1) % 97, 5, (2**63 + 3) % 97, 7, 9, 11, None]
    assert len(index) == 6


def test_build_lists_duplicates_in_manifest_and_dropped_file(tmp_path):
    pages = guide_pages(14)
    pages.append(page("copy-of-0", pages[0]["text"], title=pages[0]["title"]))
    pages.append(page("near-copy-of-1", pages[1]["text"] + " 덧붙인 문장입니다.", title=pages[1]["title"]))
    write_pages(tmp_path / "out", pages)
    result = build(make_config(tmp_path, "test_fraction: 0.1"))
    dedup = result.manifest.dedup
    assert (dedup["exact"], dedup["near"]) == (1, 1)
    dropped = [json.loads(l) for l in (result.version_dir / "dropped.jsonl").read_text("utf-8").splitlines()]
    metadata = {json.loads(l)["example_id"]: json.loads(l)["url"]
                for l in (result.version_dir / "metadata.jsonl").read_text("utf-8").splitlines()}
    pairs = {(d["url"].rsplit("/", 1)[1], metadata[d["duplicate_of"]].rsplit("/", 1)[1]) for d in dropped}
    # documents stream in URL order, so the copy (c…, n…) is kept and the original (p…) is the duplicate
    assert pairs == {("page-000.html", "copy-of-0.html"), ("page-001.html", "near-copy-of-1.html")}
    assert {p["kind"] for p in dedup["pairs"]} == {"exact", "near"}


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9])
@pytest.mark.parametrize("num_perm", [32, 64, 128])
def test_bands_and_rows_are_the_ones_datasketch_chooses(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert lsh_params(threshold, num_perm) == (lsh.b, lsh.r)
