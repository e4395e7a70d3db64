"""PySide6 windows and widgets. Importing the package first guards against a
PySide6 reference-count bug that would otherwise abort long sessions (qt_guard.py)."""
from .qt_guard import guard_refcounts

guard_refcounts()
