"""Personal data: each kind is found, checked (dates, Luhn) and replaced by a typed placeholder, or dropped."""

from __future__ import annotations

import json

import pytest

from dataset_state import guide_pages, make_config, page, write_pages
from transforms.build import build
from transforms.pii import PiiScanner, luhn_ok

SCANNER = PiiScanner()


@pytest.mark.parametrize("text,kind", [
    ("문의: eip-help@gaon.example.internal 로 메일", "email"),
    ("담당자 010-1234-5678 로 연락", "phone"),
    ("담당자01012345678로 연락", "phone"),
    ("대표 02-123-4567", "phone"),
    ("(031) 123-4567 번", "phone"),
    ("국제 +82 10-1234-5678", "phone"),
    ("US office +1 415 555 2671", "phone"),
    ("London +44 20 7946 0958", "phone"),
    ("주민등록번호 900101-1234567", "rrn"),
    ("외국인등록번호 021231-5123456", "rrn"),
    ("카드 4111 1111 1111 1111 결제", "card"),
    ("카드 5555-5555-5555-4444", "card"),
    ("서버 192.168.10.20 에 접속", "ip"),
    ("IPv6 주소 2001:db8::1 를 사용", "ip"),
])
def test_each_kind_becomes_its_typed_placeholder(text, kind):
    redacted, found = SCANNER.redact(text)
    assert found == {kind: 1}
    assert f"[{kind.upper()}]" in redacted
    assert not any(ch.isdigit() for ch in redacted.split("[")[1]) or kind == "ip"


@pytest.mark.parametrize("text", [
    "카드처럼 보이는 4111 1111 1111 1112",  # fails Luhn
    "날짜가 아닌 901301-1234567",  # month 13
    "버전 v1.2.3.4 과 시각 12:30:45",
    "날짜 2026-01-01, 주문 20260101, 타임아웃 30000",
    "C++ std::map 과 Foo::Bar",
])
def test_look_alikes_are_left_alone(text):
    assert SCANNER.redact(text) == (text, {})


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_only_configured_kinds_are_touched():
    text = "a@b.co 와 010-1111-2222"
    assert PiiScanner(["phone"]).redact(text) == ("a@b.co 와 [PHONE]", {"phone": 1})


def _pages_with_pii():
    pages = guide_pages(14)
    pages[3] = page("contact", pages[3]["text"] + "\n\n담당: kim@corp.example.com, 010-9876-5432, 서버 10.0.0.12",
                    title="연락처")
    return pages


def test_redact_mode_redacts_documents_and_examples_and_counts_in_manifest(tmp_path):
    write_pages(tmp_path / "out", _pages_with_pii())
    result = build(make_config(tmp_path, "pii: redact"))
    assert result.manifest.pii == {"mode": "redact", "found": {"email": 1, "ip": 1, "phone": 1}, "documents": 1}
    for name in ("train.jsonl", "test.jsonl", "documents.jsonl", "review.csv", "report.html"):
        text = (result.version_dir / name).read_text("utf-8")
        assert "kim@corp" not in text and "9876" not in text and "10.0.0.12" not in text
    assert "[EMAIL], [PHONE], 서버 [IP]" in (result.version_dir / "documents.jsonl").read_text("utf-8")


def test_drop_mode_drops_the_examples_with_personal_data(tmp_path):
    write_pages(tmp_path / "out", _pages_with_pii())
    result = build(make_config(tmp_path, "pii: drop"))
    assert result.manifest.counts["dropped"] == {"pii": 1}
    assert result.manifest.pii["found"] == {"email": 1, "ip": 1, "phone": 1}
    dropped = [json.loads(l) for l in (result.version_dir / "dropped.jsonl").read_text("utf-8").splitlines()]
    assert dropped[0]["reason"] == "pii" and dropped[0]["kinds"] == {"email": 1, "ip": 1, "phone": 1}


def test_off_keeps_pages_as_crawled(tmp_path):
    write_pages(tmp_path / "out", _pages_with_pii())
    result = build(make_config(tmp_path, "pii: 'off'"))
    assert "kim@corp.example.com" in (result.version_dir / "documents.jsonl").read_text("utf-8")
    assert result.manifest.pii == {"mode": "off"}
