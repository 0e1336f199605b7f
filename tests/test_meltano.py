"""The main job through the real Meltano and the real target-duckdb, into a real DuckDB file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, STREAMS, TEST_KEY
from tap_stripe_dd import cli
from tap_stripe_dd.client import to_unix

pytestmark = pytest.mark.slow


def test_meltano_run_loads_every_object_exactly_once(emulator, warehouse):
    wh = warehouse(emulator, TAP_STRIPE_DD_LOG_METRICS="true")
    run = wh.run_job()
    assert '"metric":"batch_count"' in run.stderr, "records did not go through batch files"
    for stream in STREAMS:
        ids = wh.ids(stream)
        assert len(ids) == len(set(ids)), f"{stream}: duplicates"
        assert sorted(ids) == sorted(emulator.ids(stream)), stream


def test_columns_have_warehouse_types(emulator, warehouse):
    wh = warehouse(emulator)
    wh.run_job()
    types = dict(
        wh.query(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'mystripeapi'"
        )
    )
    for stream in STREAMS:
        assert types[f"{stream}.created"] == "TIMESTAMP"
    assert types["balance_transactions.available_on"] == "TIMESTAMP"
    assert types["payouts.arrival_date"] == "TIMESTAMP"
    for column in ("charges.amount", "refunds.amount", "balance_transactions.fee"):
        assert types[column] in ("BIGINT", "HUGEINT", "INTEGER"), column
    assert types["charges.metadata"] == "JSON"
    assert types["disputes.evidence_details"] == "JSON"


def test_second_run_is_incremental(emulator, warehouse):
    wh = warehouse(emulator, TAP_STRIPE_DD_LOOKBACK_SECONDS="600")
    wh.run_job()
    first_bookmark = to_unix(wh.bookmark("charges"))
    new = emulator.add_objects("charges", 30) + emulator.add_objects("refunds", 5)
    emulator.clear_log()
    wh.run_job()
    ids = wh.ids("charges") + wh.ids("refunds")
    assert set(new) <= set(ids)
    assert len(ids) == len(set(ids))
    charges = [e for e in emulator.request_log if e.path == "/v1/charges"]
    assert min(int(e.params["created[gte]"]) for e in charges) == first_bookmark - 600


@pytest.mark.parametrize("rows_per_batch", ["300", "100"])
def test_exact_batch_multiple_keeps_the_bookmark(emulator, warehouse, rows_per_batch):
    """300 objects per endpoint: one batch exactly full (300), or three (100)."""
    wh = warehouse(emulator, TARGET_DUCKDB_BATCH_SIZE_ROWS=rows_per_batch)
    wh.run_job()
    for stream in STREAMS:
        assert len(wh.ids(stream)) == len(emulator.ids(stream)) == 300
    emulator.clear_log()
    wh.run_job()
    log = [e for e in emulator.request_log if e.path == "/v1/charges"]
    starts = {int(e.params["created[gte]"]) for e in log}
    assert min(starts) > to_unix("2024-06-01T00:00:00Z"), "second run re-read everything"


def test_key_is_nowhere_in_state_logs_or_warehouse(emulator, warehouse, tmp_path):
    wh = warehouse(emulator)
    result = wh.run_job()
    secret = TEST_KEY[8:]
    assert secret not in result.stdout + result.stderr
    assert secret.encode() not in (tmp_path / "meltano.db").read_bytes()
    tables = [row[0] for row in wh.query("SELECT table_name FROM duckdb_tables()")]
    for table in tables:
        rows = wh.query(f"SELECT * FROM mystripeapi.{table}")
        assert secret not in repr(rows)
    for log in ROOT.joinpath(".meltano", "logs").rglob("*.log"):
        assert secret not in log.read_text(errors="ignore")


@pytest.mark.parametrize(
    ("plugin", "package"),
    [("extractors/tap-stripe-dd", "singer_sdk"), ("loaders/target-duckdb", "target_duckdb")],
)
def test_plugins_are_installed_with_their_modules_compiled(meltano_installed, plugin, package):
    """Else, where Python may not write bytecode, every run compiles them again (seconds)."""
    (site,) = (ROOT / ".meltano" / plugin / "venv" / "lib").glob("python3*/site-packages")
    assert list((site / package / "__pycache__").glob("__init__.*.pyc"))


def test_meltano_yml_declares_every_tap_setting_with_label_description_and_kind():
    import yaml

    from tap_stripe_dd.tap import TapStripe

    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = project["plugins"]["extractors"]
    declared = {setting["name"]: setting for setting in extractor["settings"]}
    # The SDK adds its generic settings to the class's schema once a tap is instantiated.
    generic = ("stream_map", "faker_config", "flattening_", "batch_config")
    own = {
        name for name in TapStripe.config_jsonschema["properties"] if not name.startswith(generic)
    }
    # batch_config is the SDK's, declared because meltano.yml sets it.
    assert set(declared) == own | {"batch_config"}
    for setting in declared.values():
        assert setting.get("label") and setting.get("description") and setting.get("kind")
    assert declared["api_key"]["kind"] == "password"
    loaders = {loader["name"]: loader for loader in project["plugins"]["loaders"]}
    assert set(loaders) == {"target-duckdb", "target-postgres"}  # postgres: README, Many accounts
    for loader in loaders.values():
        assert loader["config"]["default_target_schema"] == "mystripeapi"


def test_readme_settings_table_matches_about():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "update_readme_settings.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_schedule_is_listed(emulator, warehouse):
    listed = warehouse(emulator).meltano("schedule", "list").stdout
    assert "stripe-to-duckdb-hourly" in listed and "@hourly" in listed


def test_samples_and_both_sql_forms_over_the_loaded_warehouse(emulator, warehouse, capsys):
    wh = warehouse(emulator)
    wh.run_job()
    assert cli.main(["samples", "--db", str(wh.path)]) == 0
    out = capsys.readouterr().out
    for stream in STREAMS:
        assert f"mystripeapi /{stream} ==" in out
    assert out.count("(300 rows)") == len(STREAMS)
    answers = []
    for sql in (
        "SELECT id, amount, created FROM `mystripeapi`.`/charges` ORDER BY id LIMIT 1000",
        "SELECT id, amount, created FROM mystripeapi.charges ORDER BY id LIMIT 1000",
    ):
        assert cli.main(["query", sql, "--db", str(wh.path), "--format", "json"]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0] == answers[1]
    assert sorted(row["id"] for row in answers[0]) == sorted(emulator.ids("charges"))
