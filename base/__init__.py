"""The bottom layer every other imports: state-file plumbing, logging with redaction and the error root."""
