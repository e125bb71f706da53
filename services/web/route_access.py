"""Which action each route needs: one table over the whole URL map, checked before every view.

Every endpoint of the app is in :data:`ROUTE_ACTIONS`, with the action of
:data:`services.web.access.ACTIONS` its user's role must allow (``PUBLIC``: no sign-in). The check runs
after each blueprint's own ``before_request`` has loaded the user (the dashboard has sent strangers to the
sign-in page, the API has answered them 401), and for the app's own routes too. An endpoint missing from
the table is refused to everyone (fail closed), and ``tests/web/test_web_permissions.py`` fails for it.

The table says what a role may do at all; which rows a user may see is :mod:`.access`'s other half
(another group's patient answers 404 whatever the role), and a job's type is checked on submission
(``require(user, job_type)``: training needs a researcher).
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, Flask, g, request

from services.web.access import require
from services.web.common import WebError

PUBLIC = "public"  # no sign-in needed

ROUTE_ACTIONS: dict[str, str] = {
    # open to everyone
    "static": PUBLIC,
    "healthz": PUBLIC,
    "dashboard.sign_in": PUBLIC,
    # any signed-in user
    "dashboard.index": "view",
    "dashboard.sign_out": "view",
    "api.me": "view",
    "api.openapi": "view",
    # studies
    "api.list_studies": "view",
    "api.get_study": "view",
    "api.upload_study": "upload",
    "dashboard.studies": "view",
    "dashboard.study": "view",
    "dashboard.study_slice": "view",
    "dashboard.upload_study": "upload",
    # patients and the cohort; editing a patient's clinical fields counts as adding data
    "api.list_patients": "view",
    "api.get_patient": "view",
    "api.update_patient": "upload",
    "api.cohort": "view",
    "dashboard.patient": "view",
    "dashboard.patient_volumes": "view",
    "dashboard.update_patient": "upload",
    "dashboard.cohort": "view",
    "dashboard.cohort_json": "view",
    "dashboard.cohort_plot": "view",
    # jobs: every role may segment; the job's type needs its own action when submitted
    "api.list_jobs_view": "view",
    "api.get_job": "view",
    "api.download_artifact": "view",
    "api.submit": "segment",
    "api.cancel_job": "segment",
    "dashboard.jobs": "view",
    "dashboard.jobs_json": "view",
    "dashboard.job": "view",
    "dashboard.job_json": "view",
    "dashboard.artifact": "view",
    "dashboard.new_job": "segment",
    "dashboard.submit": "segment",
    "dashboard.cancel": "segment",
    # registered data sets (the list holds only those the user may use)
    "api.list_datasets": "view",
    # the model registry
    "api.models": "view",
    "dashboard.models": "view",
}


def route_action(endpoint: str) -> str | None:
    """The action ``endpoint`` needs, ``PUBLIC``, or None when the table has no rule for it."""
    return ROUTE_ACTIONS.get(endpoint)


def check_route_access() -> None:
    """``before_request``: refuse (403) a signed-in user whose role may not do what the route does, and
    everyone on a route the table does not know; 401 for a stranger on an app route that needs a user."""
    endpoint = request.endpoint
    if endpoint is None:  # no route matched: the 404 or 405 handler answers
        return
    action = route_action(endpoint)
    if action is None:
        raise WebError(403, f"no permission rule for {endpoint}; add it to ROUTE_ACTIONS")
    if action == PUBLIC:
        return
    user = g.get("user")
    if user is None:
        raise WebError(401, "sign in first")
    require(user, action)


def _check_app_route() -> None:
    """The app-level hook: only for the app's own routes (a blueprint's run after its user loader)."""
    if request.blueprint is None:
        check_route_access()


def init_route_access(app: Flask, blueprints: Iterable[Blueprint]) -> None:
    """Check :data:`ROUTE_ACTIONS` before every view of ``app``; call after registering ``blueprints``, so
    the check runs after each blueprint's own hooks (the ones that load the user)."""
    for blueprint in blueprints:
        app.before_request_funcs.setdefault(blueprint.name, []).append(check_route_access)
    app.before_request(_check_app_route)
