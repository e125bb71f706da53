"""Signing in and out of the dashboard (the session cookie, the CSRF token and the sign-in limit live in
:mod:`services.web.auth` and :mod:`services.web.throttle`)."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for

from bmcore.accounts import authenticate
from services.web.auth import safe_next, sign_in_user, sign_out_user
from services.web.common import db
from services.web.throttle import forget_sign_in_failures


def sign_in():
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.user is not None:
            return redirect(next_path or url_for("dashboard.jobs"))
        return render_template("sign_in.html", next=next_path, email="")
    email = request.form.get("email", "").strip()
    user = authenticate(db(), email, request.form.get("password", ""))
    if user is None:
        return render_template(
            "sign_in.html", next=next_path, email=email, error="Wrong e-mail or password."
        ), 401
    forget_sign_in_failures()
    sign_in_user(user)
    return redirect(next_path or url_for("dashboard.jobs"), 303)


def sign_out():
    sign_out_user()
    return redirect(url_for("dashboard.sign_in"), 303)


def index():
    return redirect(url_for("dashboard.jobs"))


def register(bp: Blueprint) -> None:
    bp.route("/sign-in", methods=["GET", "POST"])(sign_in)
    bp.post("/sign-out")(sign_out)
    bp.get("/")(index)
