"""`review serve`: the app over a real build, served by the CLI on 127.0.0.1 port 0, driven over HTTP and by
headless Chromium (Debian's /usr/bin/chromium through Playwright; no browser download)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dataset_state import guide_pages, make_config, page, write_pages
from transforms.approval import is_approved
from transforms.build import build
from transforms.decisions import stored_decisions

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<script>alert(1)</script> <img src=x onerror=alert(1)>'
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def built(tmp_path):
    pages = guide_pages(12) + [page("hostile", f"# {HOSTILE}\n\n위험한 문서 {HOSTILE} 입니다. 설정을 확인하십시오.",
                                    title=f"제목 {HOSTILE}", category="[배치] 가이드")]
    write_pages(tmp_path / "out", pages)
    config = make_config(tmp_path, "test_fraction: 0.2")
    return config, build(config)


def start(tmp_path: Path, *args: str):
    proc = subprocess.Popen([sys.executable, str(ROOT / "pipeline.py"), "review", "serve", "--config",
                             str(tmp_path / "config.yaml"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    assert line.startswith("review: http://"), line + proc.stderr.read()
    return proc, line.split(" ", 1)[1].strip()


@pytest.fixture
def served(built, tmp_path):
    proc, url = start(tmp_path, "--port", "0")
    yield built, url.rstrip("/")
    proc.terminate()
    proc.wait(10)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode("utf-8")


def post(url: str, data: dict) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, urllib.parse.urlencode(data).encode(), timeout=10) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def metadata(version_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (version_dir / "metadata.jsonl").read_text("utf-8").splitlines()]


def test_the_versions_page_lists_the_version_and_examples_page_escapes_crawled_text(served):
    (config, result), url = served
    versions = get(url + "/")
    assert result.version_dir.name in versions and "not approved" in versions
    with pytest.raises(urllib.error.HTTPError) as missing:
        get(url + "/v/v9999")
    assert missing.value.code == 404
    html = get(f"{url}/v/{result.version_dir.name}?" + urllib.parse.urlencode({"q": "위험한"}))
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    hostile = next(m for m in metadata(result.version_dir) if "hostile" in m["url"])
    source = get(f"{url}/v/{result.version_dir.name}/source/{hostile['example_id']}")
    assert "<script>alert" not in source and "&lt;img src=x onerror=alert(1)&gt;" in source


def test_the_versions_page_shows_what_changed_and_the_report_links_each_example_to_the_app(served, tmp_path):
    from transforms.review_app import URL

    (config, first), url = served
    write_pages(tmp_path / "out", guide_pages(14))  # two pages more
    second = build(config)
    assert second.manifest.diff["previous"] == first.version_dir.name and second.manifest.diff["added"] >= 2
    versions = get(url + "/")
    d = second.manifest.diff
    assert f"examples: {d['added']} added, {d['removed']} removed, {d['changed']} changed" in versions, versions
    assert f'href="/v/{second.version_dir.name}/report#changes"' in versions

    with urllib.request.urlopen(f"{url}/v/{second.version_dir.name}/report", timeout=10) as r:
        assert "script-src" not in r.headers["Content-Security-Policy"] and "default-src 'none'" in r.headers[
            "Content-Security-Policy"]
        report = r.read().decode("utf-8")
    assert report == (second.version_dir / "report.html").read_text("utf-8")
    links = re.findall(r'href="(http://127\.0\.0\.1:\d+/v/[^"]+)"', report)
    assert links and all(link.startswith(f"{URL}/v/{second.version_dir.name}/source/") for link in links)
    ids = {m["example_id"] for m in metadata(second.version_dir)}
    for link in links[:5]:  # each opens the example in the running app (here on its own port)
        assert link.rsplit("/", 1)[1] in ids
        assert '<pre id="source">' in get(url + link[len(URL):])


def test_pagination_and_filters_are_server_side(served):
    (config, result), url = served
    name = result.version_dir.name
    meta = metadata(result.version_dir)
    first = get(f"{url}/v/{name}")
    assert f"{len(meta)} examples" in first
    assert first.count("data-example-id=") == min(50, len(meta))
    test_ids = [m["example_id"] for m in meta if m["split"] == "test"]
    only_test = get(f"{url}/v/{name}?split=test")
    assert re.findall(r'data-example-id="([^"]+)"', only_test) == test_ids
    batch = get(f"{url}/v/{name}?" + urllib.parse.urlencode({"category": "[배치] 가이드"}))
    assert re.findall(r'data-example-id="([^"]+)"', batch) == [m["example_id"] for m in meta
                                                              if m["category"] == "[배치] 가이드"]


def test_a_post_without_the_csrf_token_is_refused(served):
    (config, result), url = served
    example_id = metadata(result.version_dir)[0]["example_id"]
    status, body = post(f"{url}/v/{result.version_dir.name}/decide", {"example_id": example_id, "action": "exclude"})
    assert status == 403 and "CSRF" in body
    from base.state import state_path
    assert stored_decisions(state_path(config.output_dir), "guide") == {}


def test_an_edit_to_an_answer_that_changed_since_is_a_conflict_and_not_stored(served, tmp_path):
    (config, result), url = served
    name = result.version_dir.name
    example_id = metadata(result.version_dir)[0]["example_id"]
    html = get(f"{url}/v/{name}")
    token = csrf(html)
    base = re.search(rf'data-example-id="{re.escape(example_id)}".*?name="base" value="([^"]+)"', html, re.S).group(1)
    assert post(f"{url}/v/{name}/decide", {"csrf": token, "example_id": example_id, "action": "save",
                                           "base": base, "answer": "첫 번째 수정"})[0] == 200
    status, page_ = post(f"{url}/v/{name}/decide", {"csrf": token, "example_id": example_id, "action": "save",
                                                   "base": base, "answer": "오래된 화면의 수정"})
    assert status == 200 and 'id="conflict"' in page_
    from base.state import state_path
    assert stored_decisions(state_path(config.output_dir), "guide")[example_id] == ("edit", "첫 번째 수정")


def test_off_loopback_every_request_needs_the_printed_token(built, tmp_path):
    proc, url = start(tmp_path, "--host", "0.0.0.0")
    try:
        assert "?token=" in url
        bare = url.split("?")[0].replace("0.0.0.0", "127.0.0.1")
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(bare)
        assert refused.value.code == 403
        import http.cookiejar

        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(url.replace("0.0.0.0", "127.0.0.1"), timeout=10) as r:  # sets the cookie, redirects
            assert built[1].version_dir.name in r.read().decode("utf-8")
            assert "token=" not in r.url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_a_reviewer_excludes_edits_and_approves_in_the_browser_and_build_follows(served, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    from base.state import state_path
    from fake_openai import FakeOpenAI
    from pipeline import main

    (config, result), url = served
    name = result.version_dir.name
    meta = metadata(result.version_dir)
    excluded, edited = meta[0]["example_id"], meta[1]["example_id"]
    dialogs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page()
        tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        tab.goto(f"{url}/v/{name}?q=위험한")
        assert tab.locator("[data-example-id]").count() >= 1
        tab.goto(f"{url}/v/{name}")
        tab.locator(f'[data-example-id="{excluded}"]').get_by_role("button", name="Exclude").click()
        tab.wait_for_load_state()
        box = tab.locator(f'[data-example-id="{edited}"]')
        box.locator("textarea").fill("검토자가 고친 답변입니다.")
        box.get_by_role("button", name="Save").click()
        tab.wait_for_load_state()
        tab.select_option("select[name=category]", "[배치] 가이드")
        tab.get_by_role("button", name="Filter").click()
        tab.wait_for_load_state()
        assert all("hostile" in tab.locator("[data-example-id] a").nth(i).get_attribute("href")
                   for i in range(tab.locator("[data-example-id] a[rel]").count()))
        tab.get_by_role("button", name="Approve").click()
        tab.wait_for_load_state()
        assert "Approved" in tab.locator("#approval").inner_text()
        browser.close()
    assert dialogs == []
    assert stored_decisions(state_path(config.output_dir), "guide")[edited] == ("edit", "검토자가 고친 답변입니다.")
    assert is_approved(config, name)
    rebuilt = build(config)
    ids = {m["example_id"]: m for m in metadata(rebuilt.version_dir)}
    assert excluded not in ids and ids[edited]["review"] == "edited"

    cfg = tmp_path / "config.yaml"
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
        cfg.write_text(cfg.read_text("utf-8") + f"finetune:\n  base_url: {fake.base_url}\n  require_approval: true\n",
                       encoding="utf-8")
        assert main(["finetune", "--dataset", rebuilt.version_dir.name, "--config", str(cfg)]) == 1  # not approved
        assert fake.find_requests("POST", "/v1/fine_tuning/jobs") == []
        assert main(["finetune", "--dataset", name, "--config", str(cfg)]) == 0  # the version approved in the app
        (job,) = fake.find_requests("POST", "/v1/fine_tuning/jobs")
    assert fake.schema_violations == []


def test_the_pii_filter_finds_the_examples_of_a_page_with_personal_data(tmp_path):
    from transforms.review_app.app import build_app
    from base.state import state_path
    from transforms.review_app import index

    pages = guide_pages(12) + [page("contact", "# 연락처\n\n담당: kim@corp.example.com, 010-9876-5432 로 연락하십시오.")]
    write_pages(tmp_path / "out", pages)
    config = make_config(tmp_path, "pii: 'off'\ntest_fraction: 0.2")
    result = build(config)
    app = build_app(config, state_path(config.output_dir), tmp_path / "index")
    db = app._index(result.version_dir)
    assert set(index.filter_values(db)["pii_found"]) == {"email", "phone"}
    rows, total = index.query(db, {"pii_found": "email"}, "", {}, "", 1, 50)
    assert total >= 1 and all("contact" in row["url"] for row in rows)
