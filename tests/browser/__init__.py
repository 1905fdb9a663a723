"""Tests that drive Chromium (Playwright) against a running studio, and the web boundary (logins, hostile inputs)."""
