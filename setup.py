"""Packaging shim: pip reads pyproject.toml; scrapyd-deploy runs this file.

pyproject.toml declares what ``pip install statecrawl`` installs (wheel or
editable): the ``statecrawl`` package and the ``statecrawl`` command, nothing
else. The project's ``spiders`` and ``settings`` packages must not land in
site-packages, where they would shadow the ``spiders`` and ``settings`` of
every other flat Scrapy project in the environment.

scrapyd-deploy builds the egg it uploads with ``setup.py clean -a`` then
``setup.py bdist_egg``. That egg is the Scrapy *project*, so ``bdist_egg`` here
adds ``spiders``, ``settings`` and the ``scrapy`` entry point that scrapyd reads
to find the settings module (``settings = settings``, as in scrapy.cfg;
pyproject.toml lists ``entry-points`` as dynamic for it). It builds in a
throwaway directory: a ``build/lib`` holding ``spiders`` and ``settings`` would
end up in the next wheel that pip builds from this checkout.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

from setuptools import find_packages, setup
from setuptools.command.bdist_egg import bdist_egg

PROJECT_PACKAGES = ["spiders", "spiders.*", "settings", "settings.*"]
SETTINGS_ENTRY_POINT = "settings = settings"


class ProjectEgg(bdist_egg):
    """``bdist_egg`` of the whole Scrapy project: framework, spiders and settings."""

    def finalize_options(self) -> None:
        dist = self.distribution
        dist.packages = [*(dist.packages or []), *find_packages(include=PROJECT_PACKAGES)]
        dist.entry_points = {**(dist.entry_points or {}), "scrapy": [SETTINGS_ENTRY_POINT]}
        scratch = tempfile.mkdtemp(prefix="statecrawl-egg-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        # Before bdist_egg finalizes the build commands, which read it.
        dist.get_command_obj("build").build_base = scratch
        super().finalize_options()


setup(cmdclass={"bdist_egg": ProjectEgg})
