"""tvmflow's version: the one place it is written (pyproject.toml reads it from here).

Read from this file, not from the install metadata, so that a source tree on ``PYTHONPATH``
(the GPU device script, a checkout never pip-installed) reports the same version as an
install, and the modules it compiled are not taken for stale.
"""

__version__ = "0.1.0"
