//! End-to-end tests of doorzet live in `tests/`: one file per behaviour users rely on.
