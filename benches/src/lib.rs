//! Benchmark drivers and fixtures for the vRouter (see `src/bin/`).
