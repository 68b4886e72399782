"""`review serve`: a local web app over the dataset versions, the review decisions and the approval gate."""

PORT = 8765  # the default port: report.html links each example to the app at this address
URL = f"http://127.0.0.1:{PORT}"


def example_url(version: str, example_id: str) -> str:
    """The app's page of one example of a version (its answer beside the source section)."""
    return f"{URL}/v/{version}/source/{example_id}"
