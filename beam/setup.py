from setuptools import setup

# Dataflow ships the package with --setup_file=beam/setup.py; metadata lives in pyproject.toml.
setup()
