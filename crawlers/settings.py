"""Scrapy settings for every crawl: polite by default, quiet, bounded and resumable.

The `crawl:` section of the config and each source's values (robots.txt, page cap, depth, JOBDIR) are applied
on top of these in `crawlers.crawl`.
"""

BOT_NAME = "crawl2tune"
USER_AGENT = "crawl2tune/0.1 (+documentation crawler for fine-tuning datasets)"

# Politeness: obey robots.txt, adapt the delay to the server's latency, few parallel requests per host.
ROBOTSTXT_OBEY = True
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.25
AUTOTHROTTLE_MAX_DELAY = 10.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 4.0
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 4
DOWNLOAD_TIMEOUT = 30
RETRY_TIMES = 2
REDIRECT_MAX_TIMES = 5

# Items and requests a callback yields are processed by this many asyncio tasks per response (Scrapy creates
# them all for every response). Our pipelines are synchronous and a page yields a handful of requests, so
# Scrapy's 100 only costs time: a third of all Python calls of a re-crawl answered with 304s.
CONCURRENT_ITEMS = 8

# Bounds: a hostile page or an endless site must not stop or swamp a crawl.
DOWNLOAD_MAXSIZE = 10 * 1024 * 1024
DOWNLOAD_WARNSIZE = 0
DEPTH_LIMIT = 0

# Breadth-first, so a page cap keeps the pages closest to the start.
DEPTH_PRIORITY = 1
SCHEDULER_DISK_QUEUE = "scrapy.squeues.PickleFifoDiskQueue"
SCHEDULER_MEMORY_QUEUE = "scrapy.squeues.FifoMemoryQueue"

# One page, one request: URL variants (index.html, trailing slash, tracking parameters) share a fingerprint.
REQUEST_FINGERPRINTER_CLASS = "crawlers.urls.CanonicalFingerprinter"

DOWNLOADER_MIDDLEWARES = {
    "crawlers.middlewares.ConditionalRequestMiddleware": 560,  # validators from the previous crawl
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "crawlers.middlewares.CanonicalRedirectMiddleware": 600,  # in its place: canonical-aware, loop-aware
    "crawlers.middlewares.ServeDirProxyMiddleware": 740,  # before HttpProxyMiddleware (750)
}
ITEM_PIPELINES = {
    "crawlers.pipelines.RequireDocument": 100,
    "crawlers.pipelines.DropDuplicates": 200,
    "crawlers.pipelines.StoreDocument": 900,
}
EXTENSIONS = {
    "scrapy.extensions.remote_control.RemoteControl": None,  # unused; importing it (aiohttp) costs every crawl
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.logstats.LogStats": None,  # replaced by our progress display
    "crawlers.extensions.CrawlProgress": 500,
    "scrapy.extensions.throttle.AutoThrottle": None,
    "crawlers.extensions.NotModifiedAwareAutoThrottle": 0,  # a re-crawl of 304s speeds up like one of 200s
}
CRAWL2TUNE_PROGRESS = "auto"  # auto: a live line on a terminal, plain lines otherwise; log; off
CRAWL2TUNE_PROGRESS_INTERVAL = 30.0

# Quiet: every dropped page and failed request is counted in the crawl report with its reason.
LOG_LEVEL = "WARNING"
DEFAULT_DROPITEM_LOG_LEVEL = "INFO"
RETRY_GIVE_UP_LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
COOKIES_ENABLED = False
