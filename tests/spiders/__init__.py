"""Tests of :mod:`statecrawl.spiders`."""
