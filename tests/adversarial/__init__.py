"""Adversarial bad-input cases: every bad input must end in a clean non-zero exit that names what to
fix, with no traceback and nothing on disk changed."""
