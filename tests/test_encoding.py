"""decode_html picks the encoding a browser would: BOM, header, <meta>, then detection."""

from __future__ import annotations

import pytest

from crawlers.encoding import decode_html

# "똠" and "햏" exist only in CP949 (Microsoft's superset of EUC-KR): a strict EUC-KR decoder fails on them.
KOREAN = (
    "똠방각하 햏자의 연계 가이드입니다. 이 문서는 동기 채널을 정의하고 운영하는 데 필요한 설정 항목을 설명합니다. "
    "타임아웃과 재시도 정책은 수신 시스템의 실제 처리 능력에 맞추어 함께 검토해야 합니다."
)
KOREAN_PAGE = f"<html><head><title>채널 설정</title></head><body><h1>채널 설정</h1><p>{KOREAN}</p></body></html>"
RUSSIAN_PAGE = "<html><body><p>Привет, мир! Это тестовая страница на русском языке.</p></body></html>"
FRENCH_PAGE = (
    "<html><body><p>Le café est prêt. Voilà une phrase française avec des accents : élève, déjà, où, "
    "garçon, Noël.</p></body></html>"
)


def test_cp949_only_syllables_really_break_strict_euc_kr():
    with pytest.raises(UnicodeDecodeError):
        "똠햏".encode("cp949").decode("euc_kr")


def test_utf8_without_any_declaration():
    page = "<html><body><p>한국어와 English, café</p></body></html>"
    assert decode_html(page.encode("utf-8"), None) == page


def test_utf8_bom_is_removed_and_beats_the_header():
    page = "<p>café 한국어</p>"
    assert decode_html(b"\xef\xbb\xbf" + page.encode("utf-8"), "text/html; charset=windows-1251") == page


def test_utf16_bom_is_honoured():
    page = "<p>한국어 page</p>"
    assert decode_html(page.encode("utf-16"), None) == page


def test_header_charset_is_used():
    assert decode_html(RUSSIAN_PAGE.encode("koi8-r"), "text/html; charset=KOI8-R") == RUSSIAN_PAGE


def test_header_charset_beats_meta_charset():
    body = b'<meta charset="windows-1251">' + RUSSIAN_PAGE.encode("koi8-r")
    assert decode_html(body, 'text/html; charset="koi8-r"') == '<meta charset="windows-1251">' + RUSSIAN_PAGE


@pytest.mark.parametrize(
    "declaration",
    ['<meta charset="windows-1251">', '<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'],
)
def test_meta_declaration_is_used_without_header_charset(declaration):
    body = declaration.encode("ascii") + RUSSIAN_PAGE.encode("cp1251")
    assert decode_html(body, "text/html") == declaration + RUSSIAN_PAGE


@pytest.mark.parametrize("label", ["euc-kr", "EUC-KR", "ks_c_5601-1987"])
def test_header_declared_euc_kr_is_read_as_cp949(label):
    text = decode_html(KOREAN_PAGE.encode("cp949"), f"text/html; charset={label}")
    assert text == KOREAN_PAGE
    assert "\ufffd" not in text


def test_meta_declared_euc_kr_is_read_as_cp949():
    declaration = '<meta http-equiv="Content-Type" content="text/html; charset=euc-kr">'
    text = decode_html(declaration.encode("ascii") + KOREAN_PAGE.encode("cp949"), None)
    assert text == declaration + KOREAN_PAGE


def test_undeclared_korean_is_detected_without_replacement_characters():
    text = decode_html(KOREAN_PAGE.encode("cp949"), "text/html")
    assert "\ufffd" not in text
    assert text == KOREAN_PAGE


def test_wrong_header_declaration_falls_back_to_detection():
    text = decode_html(KOREAN_PAGE.encode("cp949"), "text/html; charset=utf-8")
    assert text == KOREAN_PAGE


def test_wrong_meta_declaration_falls_back_to_detection():
    body = b'<meta charset="utf-8">' + KOREAN_PAGE.encode("cp949")
    assert decode_html(body, None) == '<meta charset="utf-8">' + KOREAN_PAGE


def test_wrong_header_falls_back_to_a_correct_meta_declaration():
    body = b'<meta charset="euc-kr">' + KOREAN_PAGE.encode("cp949")
    assert decode_html(body, "text/html; charset=utf-8") == '<meta charset="euc-kr">' + KOREAN_PAGE


def test_undeclared_western_page_is_read_as_windows_1252():
    assert decode_html(FRENCH_PAGE.encode("cp1252"), "text/html; charset=utf-8") == FRENCH_PAGE


def test_utf8_body_behind_a_latin1_default_header_is_read_as_utf8():
    page = "<p>한국어 café</p>"
    assert decode_html(page.encode("utf-8"), "text/html; charset=ISO-8859-1") == page


def test_unknown_charset_label_is_ignored():
    page = "<p>한국어</p>"
    assert decode_html(page.encode("utf-8"), "text/html; charset=x-no-such-charset") == page


def test_empty_body_is_empty_text():
    assert decode_html(b"", "text/html; charset=utf-8") == ""


@pytest.mark.parametrize("label", ["base64", "zlib", "rot13"])
def test_non_text_codec_labels_are_ignored(label):
    page = "<p>한국어</p>"
    assert decode_html(page.encode("utf-8"), f"text/html; charset={label}") == page


@pytest.mark.parametrize("encoding", ["utf-8", "euc-kr"])
def test_xml_declaration_names_the_encoding_and_is_removed_from_the_text(encoding):
    # lxml refuses a str that declares an encoding; the text no longer has one
    declaration = f'<?xml version="1.0" encoding="{encoding}" standalone="no"?>\n'
    page = '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>레이어 대화상자</p></body></html>'
    assert decode_html((declaration + page).encode(encoding), None) == "\n" + page
    assert decode_html(page.encode(encoding), None).startswith("<html")
