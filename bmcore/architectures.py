"""The names of the architectures bmseg trains: the one list (torch-free, at the bottom of the layers).

The CLI, job parameters, the registry names (``bmseg-<arch>``) and the run configuration check names
against it; :mod:`bmcore.models.registry` maps each name to its class and asserts that the two agree.
"""

from __future__ import annotations

ARCHS: tuple[str, ...] = ("unet", "cnn", "fcn")
