"""Reports: the cohort overview (``cohort``, torch-free), training curves and overlays (``plots``) and
markdown tables (``tables``)."""
