"""The store on both backends (a SQLite file and a real PostgreSQL server): migrations and contracts."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from search_spaces.errors import Conflict, NotFound
from service import migrations
from service.states import State
from service.store import Base, Store


def test_migrations_reach_exactly_the_models(store_url):
    """Head of the migrations is the schema the ORM declares: no drift between the two."""
    store = Store(store_url)
    with store.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diffs == []
    store.engine.dispose()


def test_a_pre_alembic_database_is_adopted_not_recreated(store_url):
    """A database from the old ``create_all`` keeps its rows and is stamped, then upgraded."""
    from sqlalchemy import text

    engine = create_engine(store_url)
    with engine.begin() as conn:  # the initial schema, without Alembic's version table
        migrations.upgrade(conn, "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "INSERT INTO experiments (id, name, state, spec, created_at, updated_at) "
                "VALUES ('old', 'old', 'completed', '{}', '2024-01-01', '2024-01-01')"
            )
        )
    engine.dispose()
    store = Store(store_url)
    assert store.get_experiment("old").name == "old"
    with store.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
    store.engine.dispose()


def test_starting_twice_is_a_no_op(store_url):
    Store(store_url).engine.dispose()
    store = Store(store_url)
    assert set(inspect(store.engine).get_table_names()) >= {"experiments", "trials", "alembic_version"}
    store.engine.dispose()


def test_trial_writes_are_idempotent_and_transitions_checked(store_url):
    store = Store(store_url)
    exp = store.create_experiment("x", {"budget": {"trials": 2}})
    for _ in range(3):
        store.record_trial(
            f"{exp.id}-t", exp.id, state=State.RUNNING, epoch=1, history_entry={"epoch": 1, "miou": 0.3}
        )
    store.record_trial(f"{exp.id}-t", exp.id, state=State.COMPLETED, miou=0.5)
    with pytest.raises(Conflict):
        store.record_trial(f"{exp.id}-t", exp.id, state=State.RUNNING, miou=0.1)
    (trial,) = store.list_trials(exp.id)
    assert (trial.miou, len(trial.history)) == (0.5, 1)
    assert store.trial_counts([exp.id]) == {exp.id: 1}
    with pytest.raises(NotFound):
        store.get_experiment("nope")
    store.engine.dispose()


def test_owners_tokens_and_the_leaderboard_top_rows(store_url):
    """Owner filters, token rows, and top-k leaderboard rows with the ties at the cut, on both backends."""
    from service.auth import LOCAL, Principal, ScopedStore, create_token

    store = Store(store_url)
    alice, bob = ScopedStore(store, Principal("alice")), ScopedStore(store, Principal("bob"))
    exp = alice.create_experiment("a", {})
    assert exp.owner == "alice"
    for i, miou in enumerate([0.9, 0.8, 0.8, 0.8, 0.1]):
        store.record_trial(f"{exp.id}-{i}", exp.id, state=State.RUNNING)
        store.record_trial(f"{exp.id}-{i}", exp.id, state=State.COMPLETED, miou=miou, latency_ms=10.0 - i)
    assert [e.id for e in alice.list_experiments()] == [exp.id] and bob.list_experiments() == []
    with pytest.raises(NotFound):
        bob.get_experiment(exp.id)
    with pytest.raises(NotFound):
        bob.list_trials(exp.id)
    assert len(ScopedStore(store, LOCAL).list_experiments()) == 1
    top = store.leaderboard_candidates(None, None, None, limit=2)
    assert [t.miou for t, _ in top] == [0.9, 0.8, 0.8, 0.8]  # the cut falls inside a tie: all of it
    assert bob.leaderboard_candidates(None, None, None, limit=2) == []
    token = create_token(store, "carol", admin=True)
    (row,) = store.list_tokens()
    assert row.admin and row.name == "carol" and token.split("_")[1] == row.id
    store.revoke_token(row.id)
    assert store.get_token(row.id).revoked_at is not None
    counts = store.state_counts()
    assert counts["trials"] == {"completed": 5} and counts["experiments"] == {"pending": 1}
    assert len(store.trial_durations()) == 5
    store.engine.dispose()


def test_trial_duration_histogram_agrees_with_the_durations(store_url):
    """The scrape-time histogram is one SQL aggregate on either dialect; it must match the plain list."""
    from datetime import timedelta

    from service.store import Trial

    store = Store(store_url)
    exp = store.create_experiment("d", {})
    for i, seconds in enumerate([5, 45, 45, 700]):
        store.record_trial(f"{exp.id}-{i}", exp.id, state=State.RUNNING)
        store.record_trial(f"{exp.id}-{i}", exp.id, state=State.COMPLETED, miou=0.1)
        with store.session() as s:
            trial = s.get(Trial, f"{exp.id}-{i}")
            trial.updated_at = trial.created_at + timedelta(seconds=seconds)
    store.record_trial(f"{exp.id}-open", exp.id, state=State.RUNNING)  # not finished: not counted
    cumulative, count, total = store.trial_duration_histogram((10, 60, 600))
    assert (cumulative, count) == ([1, 3, 3], 4)
    assert total == pytest.approx(sum(store.trial_durations()), abs=0.01) == pytest.approx(795, abs=0.01)
    store.engine.dispose()


def test_hot_reads_survive_the_server_dropping_their_connections(pg_url):
    """The API's page, owner and version reads keep no pre-ping (one round trip each): a pooled
    connection the server dropped, as a restart does, is replaced and the read run again."""
    import psycopg

    store = Store(pg_url)
    exp = store.create_experiment("x", {"budget": {"trials": 1}}, owner="ana")
    version = store.write_version()
    assert store.experiment_owner(exp.id) == "ana" and store.trial_page(exp.id, limit=10) == []
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert dropped >= 1  # the store's pooled connections were there, and are gone
    assert store.write_version() == version
    assert store.experiment_owner(exp.id) == "ana"
    assert store.trial_page(exp.id, limit=10) == []
