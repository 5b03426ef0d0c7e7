# scrapyd-deploy builds its egg by running setup.py; everything is declared in pyproject.toml.
from setuptools import setup

setup()
