"""bmcore.datasets against a real database (SQLite and PostgreSQL): registering data folders by name, who
may use which, and ``bmseg demo`` naming its cohort as a promotable data set for its jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from bmcore.datasets import (
    add_dataset,
    dataset_to_dict,
    find_dataset,
    list_datasets,
    remove_dataset,
    usable_dataset,
    usable_datasets,
)
from bmcore.db import Dataset, Job, User, session_factory
from bmcore.db.groups import group_named


@pytest.fixture
def session(migrated_db_url) -> Iterator:
    with session_factory(migrated_db_url)() as session:
        yield session


def _user(session, name: str, role: str = "researcher", groups: tuple = ()) -> User:
    user = User(email=f"{name}@example.org", password_hash="-", role=role)
    session.add(user)
    session.flush()
    for name in groups:
        group = group_named(session, name)
        group.members.append(user)
    session.commit()
    return user


def test_add_list_and_remove(session, tmp_path):
    group_named(session, "lab-a")
    session.commit()
    folder = tmp_path / "brats"
    folder.mkdir()
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("study_dir\n")
    added = add_dataset(session, " brats ", folder, group="lab-a", promotable=True)
    add_dataset(session, "manifest", manifest)
    assert [d.name for d in list_datasets(session)] == ["brats", "manifest"]
    assert dataset_to_dict(session, added, with_path=True) == {
        "name": "brats",
        "group": "lab-a",
        "promotable": True,
        "path": str(folder),
    }
    assert dataset_to_dict(session, find_dataset(session, "manifest"), with_path=False) == {
        "name": "manifest",
        "group": None,
        "promotable": False,
    }
    remove_dataset(session, "brats")
    assert [d.name for d in list_datasets(session)] == ["manifest"]
    assert folder.is_dir()  # the folder itself is left alone
    with pytest.raises(LookupError, match="no data set named 'brats'"):
        remove_dataset(session, "brats")


@pytest.mark.parametrize(
    ("name", "path", "group", "message"),
    [
        ("ok", "relative/folder", None, "must be absolute"),
        ("ok", "{tmp}/missing", None, "no such folder or manifest"),
        ("../up", "{tmp}", None, "not a data set name"),
        ("a/b", "{tmp}", None, "not a data set name"),
        ("", "{tmp}", None, "not a data set name"),
        ("ok", "{tmp}", "no-such-group", "no group named 'no-such-group'"),
        ("taken", "{tmp}", None, "a data set named 'taken' exists"),
    ],
)
def test_bad_registrations_write_nothing(session, tmp_path, name, path, group, message):
    add_dataset(session, "taken", tmp_path)
    with pytest.raises((ValueError, LookupError), match=message):
        add_dataset(session, name, path.format(tmp=tmp_path), group=group)
    session.rollback()
    assert session.scalars(select(Dataset.name)).all() == ["taken"]


def test_who_may_use_which(session, tmp_path):
    alice = _user(session, "alice", groups=("lab-a",))
    bob = _user(session, "bob", groups=("lab-b",))
    root = _user(session, "root", role="admin")
    for name, group in (("shared", None), ("a-only", "lab-a"), ("b-only", "lab-b")):
        add_dataset(session, name, tmp_path, group=group)
    assert [d.name for d in usable_datasets(session, alice)] == ["a-only", "shared"]
    assert [d.name for d in usable_datasets(session, bob)] == ["b-only", "shared"]
    assert [d.name for d in usable_datasets(session, root)] == ["a-only", "b-only", "shared"]
    assert usable_dataset(session, alice, "a-only").name == "a-only"
    # another group's data set and an unknown name are the same to the caller
    assert usable_dataset(session, alice, "b-only") is None
    assert usable_dataset(session, alice, "nope") is None
    assert usable_dataset(session, alice, str(tmp_path)) is None
    alice.disabled = True
    session.commit()
    assert usable_datasets(session, alice) == []


def test_the_demo_registers_its_cohort_as_a_promotable_data_set(session, tmp_path, redis_test_url):
    from bmcore.local.demo import register_cohort, submit_each

    cohort = tmp_path / "demo-quick" / "cohort"
    cohort.mkdir(parents=True)
    assert register_cohort(cohort) == "demo-quick"
    assert register_cohort(cohort) == "demo-quick"  # a second run reuses it
    dataset = find_dataset(session, "demo-quick")
    assert dataset.promotable and dataset.path == str(cohort) and dataset.group_id is None

    train = submit_each("train", {"train unet": {"arch": "unet", "epochs": 1}}, "demo-quick")
    evaluate = submit_each("evaluate", {"evaluate unet": {"model": "models:/bmseg-unet/1"}}, "demo-quick")
    session.expire_all()
    train_params = session.get(Job, train["train unet"]).params
    assert train_params["data"] == str(cohort) and train_params["dataset"] == "demo-quick"
    assert train_params["champion_eligible"] is True  # so the demo's champion still moves
    evaluate_params = session.get(Job, evaluate["evaluate unet"]).params
    assert evaluate_params["dataset"] == "demo-quick" and "champion_eligible" not in evaluate_params

    other = tmp_path / "elsewhere" / "demo-quick" / "cohort"
    other.mkdir(parents=True)
    with pytest.raises(ValueError, match="is registered for"):
        register_cohort(other)
