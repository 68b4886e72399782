from transforms.example import Example
from transforms.split import AssignSplit, position
from transforms.stage import run_stages


def example(url: str) -> Example:
    return Example(example_id=url[-8:], document_id=url[-8:], url=url, source="s", category="c", title="t",
                   messages=[], tokens=1)


def splits(urls, fraction=0.2, seed=0):
    out, _ = run_stages((example(u) for u in urls), [AssignSplit(fraction, seed)])
    return {e.url: e.split for e in out}


URLS = [f"http://guide.example.internal/page-{i}.html" for i in range(500)]


def test_a_document_keeps_its_split_when_the_site_changes():
    before = splits(URLS)
    after = splits(URLS[::2] + [f"http://guide.example.internal/new-{i}.html" for i in range(300)])
    assert all(after[u] == before[u] for u in URLS[::2])


def test_share_of_test_documents_follows_the_fraction():
    result = splits(URLS, fraction=0.2)
    share = sum(side == "test" for side in result.values()) / len(result)
    assert 0.15 < share < 0.25


def test_seed_reshuffles_and_zero_fraction_means_no_test():
    assert splits(URLS, seed=0) != splits(URLS, seed=1)
    assert set(splits(URLS, fraction=0.0).values()) == {"train"}
    assert 0 <= position(URLS[0], 0) < 1
