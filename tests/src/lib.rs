//! Cross-service end-to-end and security suites live in `tests/`.
