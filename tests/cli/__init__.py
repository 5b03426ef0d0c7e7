"""Tests of :mod:`statecrawl.cli`."""
