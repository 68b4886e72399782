"""The one error root: every expected failure subclasses it, and the CLI turns it into one line and exit 1."""


class Crawl2TuneError(Exception):
    """A failure the user can act on; its message is one line saying what is wrong and what to do."""
