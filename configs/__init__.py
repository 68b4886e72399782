"""Configuration: one pydantic model per section, loaded from YAML with errors that name file and field.

Precedence, written down once: command-line flags > the YAML file > the defaults below. Relative paths in a
file are relative to that file, so a config works the same from cron as from the shell.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from cssselect import GenericTranslator, SelectorError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WrapValidator, field_validator,
                      model_validator)

from base.errors import Crawl2TuneError
from configs import cron, model_registry

DEFAULT_CONFIG = Path(__file__).parent / "example.yaml"


class ConfigError(Crawl2TuneError, ValueError):
    """The config file is missing, unreadable or invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regex: {exc}") from None
    return pattern


Regex = Annotated[str, AfterValidator(_compiles), Field(description="a Python regular expression")]
CronExpression = Annotated[str, AfterValidator(cron.check)]


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="an environment variable's name")]


class BasicAuth(Section):
    """HTTP basic authentication; the values are read from the environment at crawl time."""

    type: Literal["basic"] = Field(description="which login this is")
    username_env: EnvName = Field(description="environment variable holding the user name")
    password_env: EnvName = Field(description="environment variable holding the password")


class HeaderAuth(Section):
    """A header sent with every request to the source's hosts (a bearer token, an API key)."""

    type: Literal["header"] = Field(description="which login this is")
    name: str = Field(pattern=r"^[A-Za-z0-9-]+$", description="the header's name, e.g. Authorization")
    value_env: EnvName = Field(description="environment variable holding the header's value, e.g. 'Bearer …'")


class CookieAuth(Section):
    """A session cookie copied from a logged-in browser."""

    type: Literal["cookie"] = Field(description="which login this is")
    cookie_env: EnvName = Field(description="environment variable holding the Cookie header, e.g. 'SESSION=…'")


class FormAuth(Section):
    """A login form posted once before the crawl; the session cookie it sets is sent to the source's hosts."""

    type: Literal["form"] = Field(description="which login this is")
    login_url: str = Field(description="absolute URL the login form is posted to")
    username_field: str = Field(min_length=1, description="the form field of the user name")
    password_field: str = Field(min_length=1, description="the form field of the password")
    username_env: EnvName = Field(description="environment variable holding the user name")
    password_env: EnvName = Field(description="environment variable holding the password")
    success_text: str | None = Field(
        None, description="text the page after a successful login contains; default: a session cookie was set "
        "and the answer is not the login form again"
    )

    @field_validator("login_url")
    @classmethod
    def _absolute(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an absolute http(s) URL")
        return url


Auth = Annotated[BasicAuth | HeaderAuth | CookieAuth | FormAuth, Field(discriminator="type")]


class SourceConfig(Section):
    """One site to crawl."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$", description="short id used in state and manifests")
    start_urls: list[str] = Field(min_length=1, description="absolute http(s) URLs the crawl starts from")
    allowed_domains: list[str] = Field(
        default_factory=list, description="hosts links may lead to; default: the hosts of start_urls"
    )
    include: list[Regex] = Field(default_factory=list, description="follow only URLs matching one of these")
    exclude: list[Regex] = Field(default_factory=list, description="never follow URLs matching one of these")
    sitemap_urls: list[str] = Field(
        default_factory=list,
        description="sitemaps (XML, .xml.gz, sitemap indexes, or a robots.txt with Sitemap: lines) whose "
        "in-scope pages are crawled as start pages",
    )
    content_selector: str | None = Field(None, description="CSS selector of the main content; default: automatic")
    category: str | None = Field(None, description="category of every page; default: the breadcrumb, else URL path")
    category_selector: str | None = Field(
        None, description="CSS selector of the breadcrumb giving each page's category; default: detected"
    )
    max_pages: int = Field(500, ge=1, description="stop after this many pages")
    max_depth: int = Field(
        20, ge=0, description="follow links at most this many clicks away from a start page; 0: no limit"
    )
    obey_robots: bool = Field(True, description="obey robots.txt")
    serve_dir: Path | None = Field(
        None,
        description="crawl a folder of HTML files (an offline export of the site) by serving it on 127.0.0.1 "
        "for the duration of the crawl; URLs keep the hosts of start_urls",
    )
    render: Literal["auto", "always", "never"] = Field(
        "auto", description="pages built by scripts: auto renders in headless Chromium a page whose HTML has no "
        "main content but script tags; always renders every page; never renders none"
    )
    auth: Auth | None = Field(
        None, description="how to log in (basic, header, cookie or form); the config names environment variables, "
        "never the secrets"
    )
    schedule: CronExpression | None = Field(
        None, description="cron expression on which `schedule` crawls this source (instead of the global "
        "`schedule`), then builds; e.g. '0 * * * *' every hour"
    )
    attachments: list[Literal["pdf", "docx", "hwpx"]] = Field(
        default_factory=lambda: ["pdf", "docx", "hwpx"],
        description="kinds of linked files read as documents (text, headings, PDF page numbers; the linking "
        "page's category); []: none (see docs/crawling.md, Attachments)",
    )

    @field_validator("start_urls", "sitemap_urls")
    @classmethod
    def _absolute_http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{url!r} is not an absolute http(s) URL")
        return urls

    @field_validator("content_selector", "category_selector")
    @classmethod
    def _css(cls, selector: str | None) -> str | None:
        if selector is not None:
            try:
                GenericTranslator().css_to_xpath(selector)
            except SelectorError as exc:
                raise ValueError(f"{selector!r} is not a valid CSS selector: {exc}") from None
        return selector

    @property
    def domains(self) -> list[str]:
        return self.allowed_domains or sorted({urlsplit(u).hostname or "" for u in self.start_urls})


class CrawlConfig(Section):
    """How every source is crawled: identity, politeness, bounds per page, resumption, progress display."""

    user_agent: str = Field(
        "crawl2tune/0.1 (+documentation crawler for fine-tuning datasets)",
        min_length=1, description="User-Agent header, also the name robots.txt rules are matched against",
    )
    concurrency_per_domain: int = Field(4, ge=1, le=64, description="parallel requests to one host at most")
    autothrottle: bool = Field(True, description="adapt the delay between requests to the server's latency")
    start_delay_seconds: float = Field(0.25, ge=0, description="AutoThrottle's first delay between requests")
    timeout_seconds: float = Field(30.0, gt=0, description="give up on a response after this long")
    retries: int = Field(2, ge=0, le=10, description="retries after a 5xx, 408/429, timeout or connection error")
    max_page_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="responses larger than this are dropped (reason too_large)"
    )
    resume: bool = Field(
        True, description="an interrupted crawl continues where it stopped (Scrapy JOBDIR under output_dir/jobs)"
    )
    extract_workers: int | None = Field(
        None, ge=0, le=64, description="processes extracting pages in parallel; 0: in the crawl process; "
        "default: the number of CPUs, at most 4"
    )
    progress: Literal["auto", "log", "off"] = Field(
        "auto", description="auto: a live line on a terminal, else plain lines; log: plain lines; off: none"
    )
    progress_interval_seconds: float = Field(30.0, gt=0, description="seconds between plain progress lines")
    browser: str = Field(
        "chromium", min_length=1, description="the Chromium that renders pages built by scripts: a command on PATH "
        "or a path (never downloaded; apt-get install chromium)"
    )
    render_concurrency: int = Field(2, ge=1, le=32, description="pages rendered in the browser at once at most")
    redis_url: str | None = Field(
        None, description="Redis shared by `crawl --worker` processes for the frontier and the URL dedup, "
        "e.g. redis://127.0.0.1:6379/0"
    )
    redis_prefix: str = Field(
        "crawl2tune", pattern=r"^[\w.:-]+$",
        description="prefix of this project's Redis keys; give each project sharing a Redis its own",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{url!r} is not a Redis URL; use redis://HOST:PORT/DB (rediss:// for TLS)")
        return url


TEMPLATE_FIELDS = {"title", "category", "section", "url"}


def _check_placeholders(template: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc}") from None
    unknown = sorted(names - TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in {template!r}; use {', '.join('{%s}' % f for f in sorted(TEMPLATE_FIELDS))}"
        )
    return template


PII_KINDS = ("email", "phone", "rrn", "card", "ip")
DEFAULT_BOILERPLATE = [
    r"(?i)^\s*(copyright\b|©|\(c\)\s*\d{4}).*$",
    r"(?i)^.*all rights reserved.*$",
    r"(?i)^\s*(목차|table of contents|이전 ?글?|다음 ?글?|previous|next|top|맨 ?위로|home|홈|로그인|log ?in|sign ?in"
    r"|검색|search|menu|메뉴|print|인쇄|share|공유|skip to content|본문 바로가기)\s*[:>|»·-]*\s*$",
]


class FiltersConfig(Section):
    """Quality filters: what is too thin, too generic or in the wrong language to teach the model anything."""

    min_assistant_tokens: int = Field(8, ge=0, description="drop examples whose answers have fewer tokens")
    drop_boilerplate: bool = Field(
        True, description="drop examples whose answer is only headings, links and boilerplate lines"
    )
    boilerplate_patterns: list[Regex] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE),
        description="regexes matching one whole boilerplate line (navigation, copyright, …)",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="keep only documents in these languages (ISO 639-1, e.g. [ko, en]); empty: all",
    )

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if not re.fullmatch(r"[A-Za-z]{2,3}", code):
                raise ValueError(f"{code!r} is not a language code; use ISO 639-1 codes such as ko, en")
        return [c.lower() for c in codes]


class DedupConfig(Section):
    """Duplicates are removed before the split, so no answer is both trained on and tested."""

    exact: bool = Field(True, description="drop examples whose normalised answer equals a kept one")
    near_threshold: float | None = Field(
        0.85, gt=0.0, le=1.0,
        description="drop examples whose answer's estimated Jaccard similarity (MinHash over character "
        "shingles) to a kept one is at least this; null: no near-duplicate pass",
    )
    shingle_chars: int = Field(5, ge=1, le=32, description="characters per shingle (works for Korean)")
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations: more is exacter and slower")


DEFAULT_REFUSALS = [  # few patterns: each one is a scan of the opening of every answer
    r"(?:답변|대답)(?:을|해)? ?(?:드릴|할|해 ?드릴|드리기) 수 ?(?:가 )?없",
    r"(?:도와|도움을 ?|알려|안내해|제공해) ?(?:드릴|줄|드리기) 수 ?(?:가 )?없",
    r"(?:AI|인공지능) ?(?:언어 ?)?(?:모델|어시스턴트)?(?:로서|이기 때문에|이므로)",
    r"죄송(?:하지만|합니다만|합니다|해요)[^.!?\n]{0,60}(?:수 ?(?:가 )?없|어렵습니다|어려워요)",
    r"I(?: (?:cannot|can[’']t|can not|am unable to|am not able to|won[’']t be able to) "
    r"(?:answer|help|assist|provide|comply|share|discuss)|[’']m (?:sorry|afraid),? (?:but )?I (?:cannot|can[’']t|"
    r"am unable)|[’']m (?:unable|not able) to (?:answer|help|assist|provide)| (?:do not|don[’']t) have "
    r"(?:access to|enough information|information))",
    r"[Aa]s an AI\b",
]


class QualityConfig(Section):
    """Data-quality warnings of `build`: shown in its output, report.html and the manifest's `quality`; they
    never drop an example. A share threshold of 1 never warns."""

    refusal_patterns: list[Regex] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description="regexes (case-sensitive unless they start with (?i)) searched in the first 200 characters "
        "of every assistant message: a match makes the example refusal-like; replaces the built-in Korean and "
        "English list; []: no refusal check",
    )
    max_refusal_share: float = Field(
        0.01, ge=0.0, le=1.0, description="warn when more than this share of examples is refusal-like"
    )
    max_category_ratio: float = Field(
        10.0, ge=1.0, description="warn when the largest category has more than this many times the examples of "
        "the smallest"
    )
    max_format_outlier_share: float = Field(
        0.0, ge=0.0, le=1.0, description="warn when more than this share of examples differs in structure (system "
        "message, roles, turns, weight keys) from the most common one; 0: any such example"
    )
    short_answer_tokens: int = Field(
        20, ge=1, description="an answer with fewer tokens (per assistant turn) is very short"
    )
    max_short_share: float = Field(
        0.1, ge=0.0, le=1.0, description="warn when more than this share of examples has a very short answer"
    )
    max_repeated_share: float = Field(
        0.02, ge=0.0, le=1.0, description="warn when more than this share of examples has an assistant message "
        "found verbatim in an example of another page"
    )


GENERATION_STYLES = ("factual", "procedure", "troubleshooting", "comparison", "yes_no", "not_covered")


class PairJudgeConfig(Section):
    """A second model scoring every generated pair 1-5 for faithfulness to the section, usefulness and clarity;
    a pair's score is the lowest of the three. It uses the generator's provider, server and key."""

    model: str = Field(min_length=1, description="the judge model, e.g. gpt-4o-mini")
    min_score: int = Field(3, ge=1, le=5, description="pairs scored below this are dropped (reason judged_low)")
    prompt: Path | None = Field(None, description="prompt file (first line `version: N`); default: "
                                "configs/prompts/judge-pairs.md")


class GenerateConfig(Section):
    """`generate`: grounded question-answer pairs per section from an OpenAI-compatible model; none: templates.

    The API key is read only from the environment variable `api_key_env` (for Azure AZURE_OPENAI_API_KEY first);
    `base_url` else OPENAI_BASE_URL, else the provider's."""

    provider: Literal["none", "openai", "azure", "local"] = Field(
        "none", description="none: the user_templates (offline); openai: any OpenAI-compatible server (OpenAI, "
        "vLLM, Ollama, llama.cpp's server); azure: Azure OpenAI; local: an open-weights chat model run here "
        "(transformers, the local extra), concurrency requests per batch"
    )
    model: str = Field("gpt-4o-mini", min_length=1, description="the generator model (azure: the deployment; "
                       "local: a model folder or a Hugging Face hub id)")
    base_url: str | None = Field(None, description="API base URL; default: $OPENAI_BASE_URL, else the provider's")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="environment variable holding the API key (never the key itself)")
    api_version: str | None = Field(None, description="azure: API version; default: $OPENAI_API_VERSION")
    questions_per_section: Auto | Annotated[int, Field(ge=1, le=50)] = Field(
        "auto", description="questions asked per section; auto: one per tokens_per_question tokens of the "
        "section, at least min_questions, at most max_questions"
    )
    tokens_per_question: int = Field(120, ge=10, description="auto: section tokens per question")
    min_questions: int = Field(2, ge=1, le=50, description="auto: questions per section at least")
    max_questions: int = Field(8, ge=1, le=50, description="auto: questions per section at most")
    paraphrases: int = Field(2, ge=0, le=10, description="paraphrases asked per question (each is an example)")
    styles: list[str] = Field(
        default_factory=lambda: list(GENERATION_STYLES), min_length=1,
        description="question styles asked for; not_covered: a question the section does not answer, whose "
        "answer says the guide does not cover it"
    )
    language: str = Field("auto", pattern=r"^(auto|[a-z]{2,3})$",
                          description="language of questions and answers; auto: the section's")
    prompt: Path | None = Field(
        None, description="prompt file (first line `version: N`); default: configs/prompts/generate-<language>.md"
    )
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the generator")
    seed: int | None = Field(0, description="sampling seed sent with each request (where the server takes one)")
    max_tokens: int = Field(2048, ge=64, description="cap on the tokens of each response")
    response_format: bool = Field(
        True, description="ask for the pairs' JSON schema with response_format; a server that refuses it is asked "
        "without, and the reply parsed from text"
    )
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="seconds before one request times out (then retried)")
    max_retries: int = Field(3, ge=0, le=10, description="retries after 429, 5xx or a timeout (with backoff, "
                             "honouring Retry-After)")
    max_cost_usd: float | None = Field(
        None, gt=0, description="hard stop: no request is sent that could take the spend past this"
    )
    price_per_1m_input_tokens: float | None = Field(
        None, ge=0, description="USD per 1M input tokens; default: the registry's for known models, else 0"
    )
    price_per_1m_output_tokens: float | None = Field(
        None, ge=0, description="USD per 1M output tokens; default: the registry's for known models, else 0"
    )
    judge: PairJudgeConfig | None = Field(None, description="score each pair with a judge model; drop the low ones")
    recall_share: float = Field(
        0.1, ge=0, lt=1, description="share of train questions of which one paraphrase is held out into "
        "eval_recall.jsonl (never trained on)"
    )
    near_duplicate: float = Field(
        0.8, gt=0, le=1, description="questions at least this similar (MinHash Jaccard) to a kept one are dropped"
    )

    @model_validator(mode="after")
    def _bounds(self) -> "GenerateConfig":
        if self.min_questions > self.max_questions:
            raise ValueError(f"min_questions {self.min_questions} exceeds max_questions {self.max_questions}")
        return self


class DatasetConfig(Section):
    """How documents become chat examples."""

    name: str = Field("guide", pattern=r"^[A-Za-z0-9][\w.-]*$", description="dataset folder name")
    system_prompt: str = Field(
        "Category: {category}", description="system message; may use {title}, {category}, {section}, {url}"
    )
    user_templates: list[str] = Field(
        default_factory=lambda: ["{title} 관련 내용을 알려줘."],
        min_length=1,
        description="user questions; may use {title}, {category}, {section}, {url}",
    )
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of documents held out for test")
    seed: int = Field(0, description="changes which documents land in test")
    max_tokens_per_example: int | None = Field(
        None, ge=64, description="token budget per example; default and upper bound: the model's limit"
    )
    granularity: Literal["document", "section"] = Field(
        "document", description="document: one answer per page (split only to fit); section: one per ##/### section"
    )
    questions_per_document: int = Field(
        1, ge=1, description="examples per page (or section), each with another of user_templates, picked stably"
    )
    turns_per_example: int = Field(
        1, ge=1, le=50, description="consecutive sections of a page asked in one multi-turn conversation"
    )
    train_on: Literal["all", "last"] = Field(
        "all", description="all: every assistant turn is trained; last: earlier turns carry weight 0"
    )
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    pii: Literal["redact", "drop", "off"] = Field(
        "redact", description="redact: typed placeholders; drop: drop examples with PII; off: keep as crawled"
    )
    pii_kinds: list[Literal["email", "phone", "rrn", "card", "ip"]] = Field(
        default_factory=lambda: list(PII_KINDS), description="kinds of personal data looked for"
    )
    stratify: Literal["none", "category"] = Field(
        "none", description="category: each category gets its share of test documents (assignments are kept)"
    )
    fraction: float = Field(
        1.0, gt=0.0, le=1.0,
        description="share of documents kept, for scaling experiments: a subset fixed by URL and seed, so a "
        "smaller fraction's documents are inside a larger one's; the examples and sides are the full build's",
    )
    generate: GenerateConfig = Field(default_factory=GenerateConfig,
                                     description="grounded question-answer pairs from a model (`generate`)")

    @field_validator("system_prompt")
    @classmethod
    def _system_placeholders(cls, template: str) -> str:
        return _check_placeholders(template)

    @field_validator("user_templates")
    @classmethod
    def _user_placeholders(cls, templates: list[str]) -> list[str]:
        return [_check_placeholders(t) for t in templates]


Auto = Literal["auto"]


class WandbConfig(Section):
    """Weights & Biases run the platform reports a job's metrics to (the W&B key is set up in the platform)."""

    project: str = Field(min_length=1, description="W&B project the run is created under")
    name: str | None = Field(None, description="run display name; default: the job id")
    entity: str | None = Field(None, description="W&B team or user; default: the key's default entity")
    tags: list[str] = Field(default_factory=list, description="tags attached to the run")


def _within(low: float, high: float | None = None, *, integer: bool = False) -> WrapValidator:
    """A range check whose one message names the range, whether the value is out of it or not a number at all
    (a command-line flag arrives as text and is parsed here too)."""
    span = f"{'an integer' if integer else 'a number'} " + (f"from {low:g} to {high:g}" if high is not None
                                                            else f">= {low:g}")

    def check(value: Any, handler: Any) -> Any:
        try:
            checked = None if isinstance(value, bool) else handler(value)
        except ValidationError:
            checked = None
        if checked is None or not (low <= checked and (high is None or checked <= high)):
            raise ValueError(f"must be {span}, got {value!r}")
        return checked

    return WrapValidator(check)


class SamplingConfig(Section):
    """How each answer is sampled, checked against the chat completions API's ranges before any request.

    The same model validates the config file and `evaluate`'s flags (--temperature, --top-p, …, --sweep).
    """

    n: Annotated[int, _within(1, 16, integer=True)] = Field(
        1, description="answers per question, 1 to 16 (the API allows 128; each is paid for); every one is scored, "
        "and the report gives their mean and the best"
    )
    temperature: Annotated[float, _within(0, 2)] = Field(
        0.0, description="0 to 2: how random the sampling is; 0 answers (nearly) deterministically, which compares "
        "models most fairly"
    )
    top_p: Annotated[float, _within(0, 1)] = Field(
        1.0, description="0 to 1: sample only from the most likely tokens that make up this probability mass; 1: all"
    )
    frequency_penalty: Annotated[float, _within(-2, 2)] = Field(
        0.0, description="-2 to 2: above 0 lowers a token's odds by how often it already appears in the answer"
    )
    presence_penalty: Annotated[float, _within(-2, 2)] = Field(
        0.0, description="-2 to 2: above 0 lowers the odds of every token already in the answer (new topics)"
    )
    max_tokens: Annotated[int, _within(1, integer=True)] | None = Field(
        None, description="cap on each answer's tokens, 1 or more; unset: none (the local backend stops at 512)"
    )


class JudgeConfig(Section):
    """The model that grades `evaluate --set`'s answers: correct, partly correct, wrong or rightly declined."""

    provider: Literal["openai", "azure", "local"] = Field(
        "openai", description="openai (any OpenAI-compatible base_url), azure, or local (a model on this machine)")
    model: str = Field(min_length=1, description="the judge model, e.g. gpt-4.1-2025-04-14")
    base_url: str | None = Field(None, description="its OpenAI-compatible endpoint; default: finetune.base_url")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="environment variable holding its API key (the name, never the key); default: the "
        "fine-tuning API's key")
    max_tokens: int | None = Field(
        None, ge=1, description="cap on each grade's reply; unset: none (the local backend stops at 512). A grade "
        "is one short JSON line, so 200 is plenty for a judge that does not reason first, and keeps a local "
        "judge from writing 512 tokens when it strays")


class EmbeddingsConfig(Section):
    """The OpenAI-compatible embeddings endpoint `retrieval.method: embeddings` or `hybrid` asks."""

    model: str = Field("text-embedding-3-small", min_length=1, description="the embedding model, as the endpoint "
                       "names it (text-embedding-3-small, or a vLLM / Ollama / TEI model such as bge-m3)")
    base_url: str | None = Field(None, description="its OpenAI-compatible endpoint; default: finetune.base_url "
                                 "where that takes OpenAI's key (provider openai, no api_key_env), else "
                                 "OPENAI_BASE_URL, else OpenAI's")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="environment variable holding its API key (the name, never the key); "
                             "with a base_url and the variable unset, no key is sent")
    batch_size: int = Field(256, ge=1, le=2048, description="texts per request (the API takes 2,048 at most, and "
                            "300,000 tokens: a batch is cut shorter to stay under that)")
    dimensions: int | None = Field(None, ge=1, description="shorter vectors (text-embedding-3 and later); unset: "
                                   "the model's own length")
    price_per_1m_tokens: float | None = Field(None, ge=0, description="USD per 1M input tokens for the estimate "
                                              "`index` prints; unset: OpenAI's list price of the model, else 0")


class RetrievalConfig(Section):
    """The index `python pipeline.py index` builds over a version's sections, and `--rag` asks with."""

    method: Literal["bm25", "embeddings", "hybrid"] = Field(
        "bm25", description="bm25: BM25 over the tokens below (no endpoint); embeddings: cosine similarity of "
        "the `embeddings` endpoint's vectors; hybrid: both, fused by reciprocal rank")
    tokenizer: Literal["bigram", "kiwi"] = Field(
        "bigram", description="bigram: character bigrams of each word (no dependency); kiwi: kiwipiepy "
        "morphemes (pip install kiwipiepy); see docs/evaluation.md for their recall@5")
    k: int = Field(5, ge=1, le=50, description="sections given to a model as context with --rag")
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)


class EvaluationConfig(SamplingConfig):
    """How `evaluate` asks the models the test questions: the sampling above, and how many at once."""

    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    max_examples: int | None = Field(None, ge=1, description="ask only the first N test examples; default: all")
    judge: JudgeConfig | None = Field(None, description="an LLM judge for `evaluate --set`; unset: no judge, "
                                                        "chrF is the headline score")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    prices: dict[str, tuple[float, float]] = Field(
        {}, description="USD per 1M input and output tokens, per model name ([0.3, 1.2]); the report shows "
        "the cost per answer of the models listed")


class LoraConfig(Section):
    """LoRA adapter trained by the local backend (PEFT); `enabled: false` trains every weight instead."""

    enabled: bool = Field(True, description="train a LoRA adapter; false: full fine-tuning of every weight")
    r: int = Field(16, ge=1, le=1024, description="rank of the adapter's update matrices")
    alpha: int = Field(32, ge=1, description="scaling of the update (alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    target_modules: Literal["all-linear"] | Annotated[list[str], Field(min_length=1)] = Field(
        "all-linear", description="modules that get an adapter: all-linear (every linear layer but the output "
        "head) or names such as [q_proj, v_proj]"
    )


class BaseModelConfig(Section):
    """A base model of a service outside OpenAI's registry (an open-weights model on Nebius, Together,
    Fireworks …), named with what the dataset checks need to know about it."""

    name: str = Field(min_length=1, description="the model's name as the service spells it")
    context_tokens: int = Field(ge=16, description="tokens per training example at most (the service's limit)")
    encoding: Literal["o200k_base", "cl100k_base"] = Field(
        "o200k_base", description="tiktoken encoding the token counts are made with; the model's own tokenizer "
        "differs, so leave headroom below context_tokens"
    )
    format: model_registry.Format = Field("chat", description="training-file format the model takes")
    price_per_1m_training_tokens: float = Field(
        0.0, ge=0, description="USD per 1M training tokens for the cost estimate; 0: unknown (estimates read $0)"
    )

    def spec(self) -> model_registry.ModelSpec:
        return model_registry.ModelSpec(self.name, self.encoding, self.context_tokens,
                                        self.price_per_1m_training_tokens, self.format, None)


# Options of the retired /v1/fine-tunes API that the fine-tuning jobs API has no equivalent for.
LEGACY_FINE_TUNES_OPTIONS = ("prompt_loss_weight", "compute_classification_metrics", "classification_n_classes",
                             "classification_positive_class", "classification_betas")


class FinetuneConfig(Section):
    """How a dataset version becomes a fine-tuning job, and where the fine-tuning API is.

    `base_url`, `organization` and `project` are overridden by OPENAI_BASE_URL, OPENAI_ORG_ID and
    OPENAI_PROJECT_ID when those are set (CLI > env > file > default). The API key is read only from the
    environment (OPENAI_API_KEY; for Azure AZURE_OPENAI_API_KEY, else OPENAI_API_KEY), never from a file.
    With `provider: local` nothing leaves the machine: `base_model` is trained here (TRL + PEFT LoRA) with
    `n_epochs`, `batch_size`, `learning_rate`, `max_seq_length` and `lora`.
    """

    require_approval: bool = Field(False, description="refuse to fine-tune a version not marked with `approve`")
    provider: Literal["openai", "azure", "together", "fireworks", "local"] = Field(
        "openai", description="fine-tuning API: openai (or any service with OpenAI's files and fine_tuning.jobs "
        "routes at base_url, e.g. Nebius Token Factory), azure (Azure OpenAI), together (Together AI), fireworks "
        "(Fireworks AI) or local (an open-weights model trained on this machine)"
    )
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="name of the environment variable holding the API "
        "key, so two services' keys coexist; with it set, OPENAI_* variables do not apply. Default: OPENAI_API_KEY "
        "(azure: AZURE_OPENAI_API_KEY), TOGETHER_API_KEY, FIREWORKS_API_KEY"
    )
    base_models: list[BaseModelConfig] = Field(
        default_factory=list, description="base models outside OpenAI's registry that `model` may name, each with "
        "its context limit"
    )
    account: str | None = Field(None, description="fireworks: the account id its routes are under")
    training_method: Literal["sft", "dpo"] = Field(
        "sft", description="together: sft (supervised) or dpo (preference pairs); other providers train sft"
    )
    train_on_inputs: Auto | bool = Field(
        "auto", description="together: also train on the user and system turns; auto: the service's default"
    )
    from_checkpoint: str | None = Field(
        None, description="together: continue from a job's checkpoint (<job id>, <output model> or with :<step>)"
    )
    base_model: str | None = Field(
        None, description="local: the open-weights causal LM to fine-tune, a local folder or a Hugging Face hub "
        "id (from the hub cache when HF_HUB_OFFLINE=1)"
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="local: the LoRA adapter")
    learning_rate: Auto | Annotated[float, Field(gt=0, lt=1)] = Field(
        "auto", description="absolute learning rate (local, together, fireworks); auto: the service's default, "
        "locally 2e-4 with LoRA, 2e-5 for full fine-tuning. openai and azure take learning_rate_multiplier instead"
    )
    max_seq_length: int = Field(
        2048, ge=16, description="local: tokens per example at most; longer ones are cut (their end is not trained); "
        "fireworks: maxContextLength"
    )
    packing: bool = Field(False, description="local: pack several examples into each sequence (TRL's packing)")
    padding_free: bool = Field(
        False, description="local: batches without padding (TRL's padding_free; needs a GPU with FlashAttention)"
    )
    liger_kernel: bool = Field(
        False, description="local: Liger's fused Triton kernels (TRL's use_liger_kernel; pip install liger-kernel, "
        "a GPU)"
    )
    base_url: str | None = Field(
        None, description="API base URL (azure: the resource endpoint); default: the provider's"
    )
    organization: str | None = Field(None, description="OpenAI organization id sent with every request")
    project: str | None = Field(None, description="OpenAI project id sent with every request")
    api_version: str | None = Field(None, description="Azure OpenAI API version; default: $OPENAI_API_VERSION")
    n_epochs: Auto | Annotated[int, Field(strict=True, ge=1, le=50)] = Field(
        "auto", description="epochs: auto or 1-50"
    )
    batch_size: Auto | Annotated[int, Field(strict=True, ge=1, le=256)] = Field(
        "auto", description="batch size: auto or 1-256"
    )
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0)] = Field(
        "auto", description="openai, azure: a multiplier of the service's own learning rate: auto or a number > 0; "
        "the other providers take an absolute learning_rate"
    )
    suffix: str | None = Field(
        None, description="added to the fine-tuned model's name: 1-64 letters, digits, '.', '_' or '-'"
    )
    seed: int | None = Field(None, ge=0, le=2_147_483_647, description="job seed for reproducibility; default: random")
    wandb: WandbConfig | None = Field(None, description="report the job's metrics to Weights & Biases")
    poll_interval: float = Field(10.0, ge=0, description="seconds between status checks while waiting")
    timeout: float = Field(60.0, gt=0, description="seconds before one API request times out")
    max_retries: int = Field(2, ge=0, le=10, description="retries of a request after 429, 5xx or a timeout")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_legacy_options(cls, raw: Any) -> Any:
        legacy = [key for key in LEGACY_FINE_TUNES_OPTIONS if isinstance(raw, dict) and key in raw]
        if legacy:
            raise ValueError(
                f"{', '.join(legacy)}: options of the retired /v1/fine-tunes API that no longer exist in the "
                "fine-tuning API; remove them (n_epochs, batch_size, learning_rate_multiplier and suffix still "
                "apply, also to babbage-002 and davinci-002; compare models with `python pipeline.py evaluate`)"
            )
        return raw

    @field_validator("n_epochs", "batch_size", "learning_rate_multiplier", mode="before")
    @classmethod
    def _auto_or_in_range(cls, value: Any, info: Any) -> Any:
        if value == "auto":
            return value
        if info.field_name == "learning_rate_multiplier":
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return value
            raise ValueError(f"expected 'auto' or a number > 0, got {value!r}")
        high = 50 if info.field_name == "n_epochs" else 256
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high:
            return value
        raise ValueError(f"expected 'auto' or an integer from 1 to {high}, got {value!r}")

    @model_validator(mode="after")
    def _learning_rate_of_the_right_kind(self) -> "FinetuneConfig":
        multiplier = self.provider in ("openai", "azure")
        if multiplier and self.learning_rate != "auto":
            raise ValueError(f"provider {self.provider} takes learning_rate_multiplier (a multiple of its own "
                             "learning rate), not an absolute learning_rate: set learning_rate_multiplier instead")
        if not multiplier and self.learning_rate_multiplier != "auto":
            raise ValueError(f"provider {self.provider} takes an absolute learning_rate (e.g. 1e-5), not "
                             "learning_rate_multiplier: set learning_rate instead")
        return self

    @property
    def model_specs(self) -> tuple[model_registry.ModelSpec, ...]:
        """The config's own base models, as the registry takes them (`lookup(name, named=…)`)."""
        return tuple(m.spec() for m in self.base_models)

    @model_validator(mode="after")
    def _local_needs_a_model(self) -> "FinetuneConfig":
        if self.provider == "local" and not self.base_model:
            raise ValueError("provider local needs finetune.base_model: a local folder or a Hugging Face hub id of "
                             "an open-weights causal LM (e.g. Qwen/Qwen2.5-0.5B-Instruct)")
        return self

    @field_validator("suffix")
    @classmethod
    def _suffix_fits_model_name(cls, suffix: str | None) -> str | None:
        if suffix is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", suffix):
            raise ValueError(
                f"{suffix!r} must be 1-64 characters of letters, digits, '.', '_' or '-' (it becomes part of the "
                "model name)"
            )
        return suffix


class Config(Section):
    output_dir: Path = Field(Path("output"), description="where state and datasets are written")
    model: str = Field(
        model_registry.DEFAULT_MODEL,
        description="model to fine-tune: a base model, or an earlier fine-tune (ft:<base>:…) to continue it",
    )
    price_per_1m_tokens: float | None = Field(
        None, gt=0, description="training price in USD per 1M tokens; default: the registry's"
    )
    sources: list[SourceConfig] = Field(min_length=1)
    crawl: CrawlConfig = Field(default_factory=CrawlConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    schedule: CronExpression | None = Field(
        None, description="cron expression on which `schedule` runs the pipeline (sources without their own "
        "`schedule`); e.g. '0 3 * * *' every day at 03:00"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        try:
            limit = self.model_spec.max_tokens_per_example
        except model_registry.ModelError as exc:  # named where the field is, like a field validator's error
            raise ValidationError.from_exception_data("Config", [InitErrorDetails(
                type=PydanticCustomError("unknown_model", "{message}", {"message": str(exc)}), loc=("model",), input=self.model)]) from None
        wanted = self.dataset.max_tokens_per_example
        if wanted is not None and wanted > limit:
            raise ValueError(f"dataset.max_tokens_per_example {wanted} exceeds {self.model}'s limit of {limit}")
        return self

    @property
    def model_spec(self) -> model_registry.ModelSpec:
        """`model`'s spec: one of finetune.base_models, else the registry's."""
        return model_registry.lookup(self.model, self.finetune.model_specs)

    @property
    def token_limit(self) -> int:
        return self.dataset.max_tokens_per_example or self.model_spec.max_tokens_per_example


def parse_fraction(text: str, option: str = "--fraction") -> float:
    """A share of the documents from the command line, validated as `dataset.fraction`: more than 0, at most 1."""
    try:
        return DatasetConfig.model_validate({"fraction": text.strip()}).fraction
    except ValidationError:
        raise ConfigError(f"{option} {text.strip() or '(empty)'}: a fraction is a share of the documents, more than "
                          "0 and at most 1, e.g. 0.5") from None


def parse_fractions(text: str, option: str = "--compare-fractions") -> list[float]:
    """`0.5,1`: several shares of the documents, comma-separated."""
    return [parse_fraction(part, option) for part in text.split(",")]


def with_fraction(config: Config, fraction: float) -> Config:
    """`config` building only `fraction` of the documents (`build --fraction`, over the file's dataset.fraction)."""
    return config.model_copy(update={"dataset": config.dataset.model_copy(update={"fraction": fraction})})


def _rebase(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative paths in the file relative to the file."""
    if isinstance(raw.get("output_dir"), str):
        raw["output_dir"] = str((base / raw["output_dir"]).resolve())
    sources = raw.get("sources")
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, dict) and isinstance(source.get("serve_dir"), str):
            source["serve_dir"] = str((base / source["serve_dir"]).resolve())
    generate = (raw.get("dataset") or {}).get("generate") if isinstance(raw.get("dataset"), dict) else None
    if isinstance(generate, dict) and isinstance(generate.get("prompt"), str):
        generate["prompt"] = str((base / generate["prompt"]).resolve())
    judge = generate.get("judge") if isinstance(generate, dict) else None
    if isinstance(judge, dict) and isinstance(judge.get("prompt"), str):
        judge["prompt"] = str((base / judge["prompt"]).resolve())
    return raw


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against docs/config.md)"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def load_config(path: Path | str = DEFAULT_CONFIG, **overrides: Any) -> Config:
    """Read, rebase and validate a YAML config; `overrides` are top-level keys from the command line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass --config PATH (see configs/example.yaml)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: cannot read YAML: {detail}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    raw = _rebase(raw, path.resolve().parent)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    except model_registry.ModelError as exc:
        raise ConfigError(f"{path}: model: {exc}") from None
