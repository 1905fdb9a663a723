"""Views: HTML, plots, attention, videos, reports."""
