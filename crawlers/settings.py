"""Scrapy settings for every crawl: polite by default, quiet, bounded and resumable.

What a config can change has its default in the config models (`configs.CrawlConfig`, `configs.SourceConfig`),
the one source: `crawlers.crawl` sets USER_AGENT, ROBOTSTXT_OBEY, AUTOTHROTTLE_ENABLED / _START_DELAY /
_TARGET_CONCURRENCY, CONCURRENT_REQUESTS(_PER_DOMAIN), DOWNLOAD_TIMEOUT, RETRY_TIMES, DOWNLOAD_MAXSIZE,
CLOSESPIDER_PAGECOUNT, DEPTH_LIMIT, JOBDIR and CRAWL2TUNE_PROGRESS(_INTERVAL) from them on top of these.
"""

BOT_NAME = "crawl2tune"

# Politeness (robots.txt, AutoThrottle and the requests per host come from the config): a bounded delay.
AUTOTHROTTLE_MAX_DELAY = 10.0
REDIRECT_MAX_TIMES = 5

# Items and requests a callback yields are processed by this many asyncio tasks per response (Scrapy creates
# them all for every response). Our pipelines are synchronous and a page yields a handful of requests, so
# Scrapy's 100 only costs time: a third of all Python calls of a re-crawl answered with 304s.
CONCURRENT_ITEMS = 8

# Bounds: a hostile page or an endless site must not stop or swamp a crawl (the size and depth caps come from
# the config).
DOWNLOAD_WARNSIZE = 0

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
    "crawlers.middlewares.AuthMiddleware": 650,  # a source's login headers; sees a redirect before it is followed
}
# One storage of the two is used (crawlers.pipelines.Storage): the other raises NotConfigured.
ITEM_PIPELINES = {
    "crawlers.pipelines.RequireDocument": 100,
    "crawlers.pipelines.StoreDocument": 900,  # a crawl of its own: this process's state
    "crawlers.frontier.PublishPages": 900,  # a worker of a shared crawl (CRAWL2TUNE_WORKER): the page stream
}
EXTENSIONS = {
    "scrapy.extensions.remote_control.RemoteControl": None,  # unused; importing it (aiohttp) costs every crawl
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.logstats.LogStats": None,  # replaced by our progress display
    "crawlers.extensions.CrawlProgress": 500,
    "scrapy.extensions.throttle.AutoThrottle": None,
    "crawlers.extensions.NotModifiedAwareAutoThrottle": 0,  # a re-crawl of 304s speeds up like one of 200s
    "crawlers.frontier.WorkerPresence": 600,  # a worker of a shared crawl only
}

# Quiet: every dropped page and failed request is counted in the crawl report with its reason.
LOG_LEVEL = "WARNING"
DEFAULT_DROPITEM_LOG_LEVEL = "INFO"
RETRY_GIVE_UP_LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
COOKIES_ENABLED = False
