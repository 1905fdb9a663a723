"""The project itself: its architecture, its style, its documentation."""
