"""Scrapy settings for every crawl: polite by default, quiet, and bounded.

Per-source values (robots.txt, page cap) are applied on top of these in `crawlers.crawl`.
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

# Bounds: a hostile page or an endless site must not stop or swamp a crawl.
DOWNLOAD_MAXSIZE = 10 * 1024 * 1024
DOWNLOAD_WARNSIZE = 0
DEPTH_LIMIT = 0

# Breadth-first, so a page cap keeps the pages closest to the start.
DEPTH_PRIORITY = 1
SCHEDULER_DISK_QUEUE = "scrapy.squeues.PickleFifoDiskQueue"
SCHEDULER_MEMORY_QUEUE = "scrapy.squeues.FifoMemoryQueue"

DOWNLOADER_MIDDLEWARES = {
    "crawlers.middlewares.ServeDirProxyMiddleware": 740,  # before HttpProxyMiddleware (750)
}
ITEM_PIPELINES = {
    "crawlers.pipelines.RequireContent": 100,
    "crawlers.pipelines.StoreDocument": 900,
}

LOG_LEVEL = "WARNING"
TELNETCONSOLE_ENABLED = False
COOKIES_ENABLED = False
