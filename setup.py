"""The project's one compiled part; everything else about the package is in pyproject.toml.

``imocha_pipeline.sync.core._textmatch`` runs the diff engine's text hashing and comparisons on every core
(``sync/core/text_native.py``). It is optional: where no C compiler is available the install still succeeds
and the engine runs the same plan in Python, on one core.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("imocha_pipeline.sync.core._textmatch", ["imocha_pipeline/sync/core/_textmatch.c"],
                             extra_compile_args=["-O2", "-pthread"], extra_link_args=["-pthread"], optional=True)])
