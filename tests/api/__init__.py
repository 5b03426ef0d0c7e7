"""Tests of :mod:`statecrawl.api`."""
