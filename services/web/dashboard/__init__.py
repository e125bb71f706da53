"""The dashboard: HTML pages with session-cookie auth, plus the small JSON and PNG routes its scripts poll.

One blueprint, ``dashboard``; each module holds the views of one resource and a ``register(bp)`` that
adds its routes: :mod:`.session` (sign-in and out), :mod:`.studies` (upload, viewer), :mod:`.jobs`
(lists, the new-job form, a job's page), :mod:`.models` (the registry), :mod:`.cohort` and
:mod:`.patients`. Thin views: validate, write a row (``store_study_upload``, ``submit_job``), redirect.
Every POST carries the session's CSRF token (checked in :func:`services.web.auth.load_dashboard_user`).
"""

from __future__ import annotations

from flask import Blueprint

from services.web.auth import load_dashboard_user
from services.web.dashboard import cohort, jobs, models, patients, session, studies

bp = Blueprint("dashboard", __name__)
bp.before_request(load_dashboard_user)
for module in (session, studies, jobs, models, cohort, patients):
    module.register(bp)
