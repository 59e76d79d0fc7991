//! Tests against real SQLite files.
