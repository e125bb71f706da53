"""``bmseg``: the command line, thin over :mod:`bmcore`, one module per command group.

Every user error ends with one line on stderr (``error: …``) and a non-zero exit code, never a traceback
(set ``BMSEG_DEBUG=1`` to see one). A command group's module loads only when one of its commands runs
(:mod:`bmcore.cli.entry`), and heavy modules (torch, mlflow) are imported inside the commands that need
them, so ``bmseg check`` and ``bmseg jobs`` start fast.
"""

from bmcore.cli.entry import app, main

__all__ = ["app", "main"]
