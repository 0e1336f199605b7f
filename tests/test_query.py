"""`stripe-dd query | samples | tables` against real DuckDB files shaped like target-duckdb's."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tap_stripe_dd.cli import main
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.query import SAMPLES, query
from tap_stripe_dd.query.rewrite import to_duckdb
from tap_stripe_dd.query.warehouse import LOCKDOWN, open_warehouse

ENDPOINTS = ("balance_transactions", "charges", "customers", "disputes", "payouts", "refunds")
ROWS = {
    "mystripeapi": dict(zip(ENDPOINTS, (30, 2500, 40, 2, 5, 1), strict=True)),
    "otherstripe": dict.fromkeys(ENDPOINTS, 3),
    "partial": {"charges": 1},  # loaded without _sdc_batched_at
    "emptysource": {},
}
COLUMNS = [
    "id",
    "amount",
    "created",
    "metadata",
    "description",
    "_sdc_batched_at",
    "_sdc_deleted_at",
]
STRIPE_DD = str(Path(sys.executable).with_name("stripe-dd"))
SECRET = "sentinel-7f3a-not-in-the-warehouse"


def build_warehouse(path: Path) -> Path:
    """Rows i = 0.. of each table: id ch_00000, amount 100·i, created and batched i seconds in."""
    with duckdb.connect(str(path)) as con:
        for source, tables in ROWS.items():
            con.execute(f"CREATE SCHEMA {source}")
            for endpoint, count in tables.items():
                batched = "" if source == "partial" else ", ts + to_seconds(i) AS _sdc_batched_at"
                con.execute(
                    f"""
                    CREATE TABLE {source}.{endpoint} AS
                    SELECT '{endpoint[:2]}_' || lpad(i::VARCHAR, 5, '0') AS id,
                           (i * 100)::HUGEINT AS amount,
                           TIMESTAMP '2026-01-01' + to_seconds(i) AS created,
                           json_object('order', i, 'tags', ['a', 'b']) AS metadata,
                           repeat('x', 200) AS description
                           {batched}, NULL::VARCHAR AS _sdc_deleted_at
                    FROM range({count}) t(i), (SELECT TIMESTAMP '2026-11-26 10:00:00' AS ts)
                    """
                )
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("template") / "stripe.duckdb")


@pytest.fixture
def warehouse(template, tmp_path, monkeypatch):
    """A fresh copy in an otherwise empty working directory, wide terminal by default."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.delenv("STRIPE_DD_DB", raising=False)
    return Path(shutil.copy(template, tmp_path / "stripe.duckdb"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fetch(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


ORACLE = "SELECT id, amount FROM mystripeapi.charges ORDER BY id LIMIT 1000"
# The Drill form reads as the live list would: deleted objects left out, newest first.
LISTED = "(SELECT * FROM {} WHERE _sdc_deleted_at IS NULL ORDER BY created DESC, id DESC) AS {}"


@pytest.mark.parametrize(
    ("sql", "as_file"),
    [
        ("SELECT id, amount FROM `mystripeapi`.`/charges` ORDER BY id LIMIT 1000", False),
        ("SELECT id, amount FROM `mystripeapi`.`/charges` ORDER BY id LIMIT 1000", True),
        (
            "SELECT `mystripeapi`.`/charges`.id, amount FROM `mystripeapi`.`/charges` "
            "ORDER BY 1 LIMIT 1000",
            False,
        ),
        (ORACLE, False),
        ('SELECT "id", amount FROM "mystripeapi"."charges" ORDER BY 1 LIMIT 1000', False),
        ("FROM mystripeapi.charges SELECT id, amount ORDER BY id LIMIT 1000", False),
        ("SELECT id, amount FROM stripe.mystripeapi.charges ORDER BY id LIMIT 1000", False),
    ],
    ids=[
        "drill",
        "drill-file",
        "drill-column",
        "duckdb",
        "duckdb-quoted",
        "duckdb-from-first",
        "duckdb-catalog",
    ],
)
def test_every_form_returns_the_warehouse_rows(warehouse, tmp_path, capsys, sql, as_file):
    if as_file:
        (tmp_path / "q.sql").write_text(sql + "\n")
        sql = "q.sql"
    code, out, err = run(capsys, "query", sql, "--db", str(warehouse), "--format", "json")
    assert (code, err) == (0, "")
    records = json.loads(out)
    assert [(r["id"], r["amount"]) for r in records] == fetch(warehouse, ORACLE)
    assert len(records) == 1000


@pytest.mark.parametrize(
    ("sql", "source", "expected"),
    [
        (
            "SELECT * FROM `mystripeapi`.`/charges`\nLIMIT 1000",
            None,
            "SELECT * FROM " + LISTED.format("mystripeapi.charges", "charges") + " LIMIT 1000",
        ),
        (
            "SELECT * FROM `mystripeapi`.`/charges`\nLIMIT 1000",
            "otherstripe",
            "SELECT * FROM " + LISTED.format("otherstripe.charges", "charges") + " LIMIT 1000",
        ),
        (
            "SELECT `mystripeapi`.`/charges`.id FROM `mystripeapi`.`/charges`",
            "otherstripe",
            "SELECT charges.id FROM " + LISTED.format("otherstripe.charges", "charges"),
        ),
        (
            "WITH c AS (SELECT * FROM `mystripeapi`.`/charges`) SELECT count(*) FROM c",
            None,
            "WITH c AS (SELECT * FROM "
            + LISTED.format("mystripeapi.charges", "charges")
            + ") SELECT COUNT(*) FROM c",
        ),
        (
            "SELECT c.id FROM `mystripeapi`.`/charges` c JOIN mystripeapi.refunds r ON r.id = c.id",
            None,
            "SELECT c.id FROM "
            + LISTED.format("mystripeapi.charges", "c")
            + " JOIN mystripeapi.refunds AS r ON r.id = c.id",
        ),
        (
            "SELECT metadata::JSON FROM mystripeapi.charges",
            None,
            "SELECT CAST(metadata AS JSON) FROM mystripeapi.charges",
        ),
    ],
)
def test_rewrite_to_duckdb_sql(warehouse, sql, source, expected):
    with open_warehouse(warehouse) as wh:
        rewritten = to_duckdb(sql, wh, source)
        assert rewritten == expected
        assert wh.execute(rewritten)[0]  # and DuckDB runs it


def test_limit_1000_of_2500_rows_in_the_default_table(warehouse, capsys):
    code, out, _ = run(
        capsys, "query", (SAMPLES / "charges.sql").read_text(), "--db", str(warehouse)
    )
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split(" | ")[0].strip() == "id"
    assert set(lines[1]) <= {"-", "+"}
    assert lines[-1] == "(1,000 rows)"
    assert len(lines[2:-1]) == 1000


def test_the_six_samples_are_shipped_verbatim():
    shipped = {s.name: s.read_text() for s in SAMPLES.iterdir() if s.name.endswith(".sql")}
    assert shipped == {
        f"{e}.sql": f"SELECT * FROM `mystripeapi`.`/{e}`\nLIMIT 1000\n" for e in ENDPOINTS
    }


@pytest.mark.parametrize("source", ["mystripeapi", "otherstripe"])
def test_samples_print_each_endpoint(warehouse, capsys, source):
    before = digest(warehouse)
    argv = ["samples", "--db", str(warehouse)] + (
        ["--source", source] if source != "mystripeapi" else []
    )
    code, out, err = run(capsys, *argv)
    sections = out.split("== ")[1:]
    assert (code, err) == (0, "")
    assert [s.splitlines()[0] for s in sections] == [f"{source} /{e} ==" for e in ENDPOINTS]
    for endpoint, section in zip(ENDPOINTS, sections, strict=True):
        lines = section.strip().splitlines()
        assert [c.strip() for c in lines[1].split(" | ")] == COLUMNS
        shown = min(1000, ROWS[source][endpoint])
        assert lines[-1] == f"({shown:,} row{'' if shown == 1 else 's'})"
        assert len(lines) == 3 + shown + 1
    assert digest(warehouse) == before


def test_samples_run_the_rest_when_an_endpoint_is_missing(warehouse, capsys):
    code, out, err = run(capsys, "samples", "--db", str(warehouse), "--source", "partial")
    assert code == 2
    assert "== partial /charges ==" in out and "(1 row)" in out
    assert "(not run: unknown endpoint '/refunds' in 'partial'; its endpoints: /charges)" in out
    assert err == (
        "stripe-dd samples: error: 5 of 6 samples did not run: /balance_transactions, "
        "/customers, /disputes, /payouts, /refunds\n"
    )


ROUND_TRIP = (
    "SELECT id, amount, created, metadata, _sdc_deleted_at, amount > 100 AS big, "
    "(amount / 8)::DECIMAL(9, 2) AS eighth, [amount, amount + 1] AS pair "
    "FROM mystripeapi.charges ORDER BY id LIMIT 3"
)


def test_json_output_round_trips(warehouse, capsys):
    code, out, _ = run(capsys, "query", ROUND_TRIP, "--db", str(warehouse), "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {
            "id": f"ch_0000{i}",
            "amount": 100 * i,
            "created": f"2026-01-01T00:00:0{i}",
            "metadata": {"order": i, "tags": ["a", "b"]},
            "_sdc_deleted_at": None,
            "big": i > 1,
            "eighth": 12.5 * i,
            "pair": [100 * i, 100 * i + 1],
        }
        for i in range(3)
    ]


def test_csv_output_round_trips(warehouse, capsys):
    code, out, _ = run(capsys, "query", ROUND_TRIP, "--db", str(warehouse), "--format", "csv")
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == [
        ["id", "amount", "created", "metadata", "_sdc_deleted_at", "big", "eighth", "pair"],
        *(
            [
                f"ch_0000{i}",
                str(100 * i),
                f"2026-01-01 00:00:0{i}",
                f'{{"order":{i},"tags":["a","b"]}}',
                "",
                "true" if i > 1 else "false",
                f"{12.5 * i:.2f}",
                f"[{100 * i}, {100 * i + 1}]",
            ]
            for i in range(3)
        ),
    ]


@pytest.mark.parametrize(
    ("sql", "note"),
    [
        ("SELECT description FROM mystripeapi.charges LIMIT 3", "x" * 38 + "…"),
        ("SELECT * FROM mystripeapi.charges LIMIT 3", "(4 more columns not shown"),
        ("SELECT repeat('y', 500) AS long", "y" * 39 + "…"),
    ],
)
def test_table_output_fits_the_terminal(warehouse, capsys, monkeypatch, sql, note):
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = run(capsys, "query", sql, "--db", str(warehouse))
    table = [line for line in out.splitlines() if not line.startswith("(")]
    assert code == 0
    assert note in out
    assert max(len(line) for line in table) <= 60


def test_loader_columns_make_way_first(warehouse, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    sql = "SELECT _sdc_batched_at, id, description, amount FROM mystripeapi.charges LIMIT 2"
    code, out, _ = run(capsys, "query", sql, "--db", str(warehouse))
    lines = out.splitlines()
    assert code == 0
    assert [name.strip() for name in lines[0].split(" | ")] == ["id", "description", "amount"]
    assert lines[2] == f"ch_00000 | {'x' * 39}… |      0"
    assert lines[-1] == "(1 more column not shown: select fewer or use --format csv|json)"


def test_tables_show_counts_and_last_sync(warehouse, capsys):
    code, out, _ = run(capsys, "tables", "--db", str(warehouse))
    assert code == 0
    assert out == (
        "emptysource\n"
        "└── (no endpoints yet)\n"
        "\n"
        "mystripeapi\n"
        "├── /balance_transactions      30 rows   last sync 2026-11-26 10:00:29\n"
        "├── /charges                2,500 rows   last sync 2026-11-26 10:41:39\n"
        "├── /customers                 40 rows   last sync 2026-11-26 10:00:39\n"
        "├── /disputes                   2 rows   last sync 2026-11-26 10:00:01\n"
        "├── /payouts                    5 rows   last sync 2026-11-26 10:00:04\n"
        "└── /refunds                    1 row    last sync 2026-11-26 10:00:00\n"
        "\n"
        "otherstripe\n"
        "├── /balance_transactions   3 rows   last sync 2026-11-26 10:00:02\n"
        "├── /charges                3 rows   last sync 2026-11-26 10:00:02\n"
        "├── /customers              3 rows   last sync 2026-11-26 10:00:02\n"
        "├── /disputes               3 rows   last sync 2026-11-26 10:00:02\n"
        "├── /payouts                3 rows   last sync 2026-11-26 10:00:02\n"
        "└── /refunds                3 rows   last sync 2026-11-26 10:00:02\n"
        "\n"
        "partial\n"
        "└── /charges   1 row    last sync —\n"
    )


def test_tables_on_a_warehouse_without_sources(tmp_path, capsys):
    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    code, out, _ = run(capsys, "tables", "--db", str(tmp_path / "empty.duckdb"))
    assert code == 0
    assert "(no data sources in" in out and "load it first: `stripe-dd demo`" in out


def test_db_comes_from_the_environment(warehouse, capsys, monkeypatch):
    monkeypatch.setenv("STRIPE_DD_DB", str(warehouse))
    code, out, _ = run(capsys, "query", "SELECT count(*) AS n FROM `otherstripe`.`/charges`")
    assert code == 0
    assert out.splitlines()[2].strip() == "3"


REFUSED = "only queries run here"
NO_ACCESS = "file system operations are disabled by configuration"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["query", "SELECT * FROM `my-stripe`.`/charges`"],
            "lowercase letters, digits and underscores",
        ),
        (["samples", "--source", "Stripe-2"], "lowercase letters, digits and underscores"),
        (
            ["query", "SELECT * FROM nosuch.charges"],
            "data sources in {db}: emptysource, mystripeapi, otherstripe, partial",
        ),
        (["samples", "--source", "nosuch"], "unknown data source 'nosuch'"),
        (
            ["query", "SELECT * FROM `mystripeapi`.`/invoices`"],
            "its endpoints: /balance_transactions, /charges, /customers, /disputes, /payouts, "
            "/refunds",
        ),
        (["query", "SELECT * FROM other.mystripeapi.charges"], "unknown database 'other'"),
        (["query", "SELEC * FROM `mystripeapi`.`/charges`"], "SQL syntax error at line 1"),
        (["query", "SELECT id FROM mystripeapi.charges WHERE"], "SQL syntax error at line 1"),
        (
            ["query", "SELECT nope FROM mystripeapi.charges"],
            'Binder Error: Referenced column "nope" not found',
        ),
        (["query", "SELECT 'x'::INTEGER"], "Conversion Error"),
        (
            ["query", "SELECT CASE WHEN i = 50000 THEN error('late') END FROM range(99999) t(i)"],
            "Invalid Input Error: late",
        ),
        (["query", ";"], "no SQL statement given"),
        (["query", "missing.sql"], "cannot read SQL file missing.sql"),
        (["query", "INSERT INTO mystripeapi.charges (id) VALUES ('x')"], "INSERT is not a query"),
        (["query", "UPDATE mystripeapi.charges SET amount = 0"], "UPDATE is not a query"),
        (["query", "DELETE FROM mystripeapi.charges"], "DELETE is not a query"),
        (["query", "DROP TABLE mystripeapi.charges"], "DROP is not a query"),
        (["query", "CREATE TABLE mystripeapi.x AS SELECT 1"], "CREATE is not a query"),
        (["query", "ALTER TABLE mystripeapi.charges ADD COLUMN x INT"], "ALTER is not a query"),
        (["query", "COPY mystripeapi.charges TO 'out.csv'"], "COPY is not a query"),
        (["query", "EXPORT DATABASE 'dump'"], "EXPORT is not a query"),
        (["query", "ATTACH 'other.duckdb' AS other"], "ATTACH is not a query"),
        (["query", "INSTALL httpfs"], "INSTALL is not a query"),
        (["query", "LOAD httpfs"], "LOAD is not a query"),
        (["query", "SET enable_external_access = true"], "SET is not a query"),
        (["query", "PRAGMA enable_profiling"], "PRAGMA is not a query"),
        (["query", "CALL pragma_version()"], "CALL is not a query"),
        (["query", "SELECT 1 INTO copied"], "CREATE is not a query"),
        (
            ["query", "WITH d AS (DELETE FROM mystripeapi.charges RETURNING *) SELECT * FROM d"],
            "contains DELETE",
        ),
        (["query", "SELECT 1; DROP TABLE mystripeapi.charges"], "one statement at a time, got 2"),
        (["query", "charges"], "SQL syntax error: expected a query such as SELECT"),
        (["query", "SELECT * FROM read_csv('/etc/passwd')"], NO_ACCESS),
        (["query", "SELECT * FROM read_text('/etc/passwd')"], NO_ACCESS),
        (["query", "SELECT * FROM glob('/etc/*')"], NO_ACCESS),
        (["query", "SELECT * FROM read_parquet('https://example.com/x.parquet')"], NO_ACCESS),
        (["query", "SELECT * FROM '/etc/passwd'"], "Table with name /etc/passwd does not exist"),
        (
            ["query", "SELECT 1", "--db", "{missing}"],
            "no warehouse at {missing}: load it first: `stripe-dd demo` for the emulator's data",
        ),
        (["tables", "--db", "{notes}"], "cannot open warehouse {notes}"),
        (["tables", "--db", "{tmp}"], "{tmp} is a directory: --db takes the DuckDB file"),
    ],
)
def test_bad_input_is_refused_cleanly(warehouse, tmp_path, capsys, argv, message):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    names = {
        "db": warehouse,
        "missing": tmp_path / "missing.duckdb",
        "notes": notes,
        "tmp": tmp_path,
    }
    argv = [a.format(**names) for a in argv]
    if "--db" not in argv:
        argv += ["--db", str(warehouse)]
    before, files = digest(warehouse), sorted(tmp_path.iterdir())
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(f"stripe-dd {argv[0]}: error: ") and err.count("\n") == 1
    assert message.format(**names) in err
    assert "Traceback" not in err and "root:" not in out + err
    assert (digest(warehouse), sorted(tmp_path.iterdir())) == (before, files)


@pytest.mark.parametrize(
    "statement",
    [
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "SELECT * FROM read_text('/etc/passwd')",
        "CREATE TABLE mystripeapi.x (i INT)",
        "COPY mystripeapi.charges TO 'out.csv'",
        "ATTACH 'other.duckdb' AS other",
        "INSTALL httpfs",
    ],
)
def test_the_connection_is_locked_down_even_without_the_parser(warehouse, statement):
    with open_warehouse(warehouse) as wh:
        for name, value in LOCKDOWN.items():
            assert wh.con.execute("SELECT current_setting($1)", [name]).fetchone() == (value,)
        with pytest.raises(duckdb.Error):
            wh.con.execute(statement)


@pytest.mark.parametrize(
    ("argv", "code", "stdout", "stderr"),
    [
        (["query", "SELECT count(*) AS n FROM `mystripeapi`.`/charges`"], 0, "2500", ""),
        (
            ["query", "SELECT * FROM", "--format", "csv"],
            2,
            "",
            "stripe-dd query: error: SQL syntax error",
        ),
        (
            ["query", "DROP TABLE mystripeapi.charges"],
            2,
            "",
            "stripe-dd query: error: refused: DROP",
        ),
        (
            ["samples", "--source", "Bad"],
            2,
            "",
            "stripe-dd samples: error: invalid data-source name",
        ),
        (["tables", "--db", "nowhere.duckdb"], 2, "", "stripe-dd tables: error: no warehouse at"),
    ],
)
def test_the_installed_command(warehouse, argv, code, stdout, stderr):
    env = {"STRIPE_DD_DB": str(warehouse), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([STRIPE_DD, *argv], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == code
    assert stdout in proc.stdout and proc.stderr.startswith(stderr)
    assert proc.stderr.count("\n") == (1 if code else 0) and "Traceback" not in proc.stderr


def test_a_writer_holding_the_file_gets_one_line(warehouse):
    with duckdb.connect(str(warehouse)):  # a read-write DuckDB session on the published file
        proc = subprocess.run(
            [STRIPE_DD, "tables", "--db", str(warehouse)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert proc.returncode == 2
    assert "a process writes to it" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_closed_pipe_ends_quietly(warehouse):
    argv = [STRIPE_DD, "query", "SELECT * FROM mystripeapi.charges", "--db", str(warehouse)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"id ")
    proc.stdout.close()  # as `| head -1` does
    assert (proc.wait(timeout=30), proc.stderr.read()) == (0, b"")


def strict_json(text: str) -> object:
    """json.loads that refuses what JSON does not have (NaN, Infinity), as other tools do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_valid_json_for_every_double_and_blob(warehouse, capsys):
    sql = (
        "SELECT v, [v, 1.5] AS list, {'v': v} AS struct, to_json({'v': v}) AS doc, b "
        "FROM (VALUES ('nan'::DOUBLE, '\\x00\\xFFab'::BLOB), ('inf'::DOUBLE, 'x'::BLOB), "
        "('-inf'::DOUBLE, NULL), (2.5, ''::BLOB)) t(v, b)"
    )
    code, out, _ = run(capsys, "query", sql, "--db", str(warehouse), "--format", "json")
    assert code == 0
    records = strict_json(out)
    texts = ["NaN", "Infinity", "-Infinity", 2.5]
    assert [r["v"] for r in records] == texts
    assert [r["list"] for r in records] == [[v, 1.5] for v in texts]
    assert [r["struct"] for r in records] == [{"v": v} for v in texts]
    assert [base64.b64decode(r["b"]) if r["b"] is not None else None for r in records] == [
        b"\x00\xffab",
        b"x",
        None,
        b"",
    ]
    code, out, _ = run(capsys, "query", sql, "--db", str(warehouse), "--format", "csv")
    assert [row[-1] for row in csv.reader(io.StringIO(out))] == ["b", "\\x00\\xFFab", "x", "", ""]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'otherstripe' AND table_name = 'payouts'",
            "payouts",
        ),
        ("SELECT count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname = 'partial'", "1"),
        ("EXPLAIN SELECT count(*) FROM `mystripeapi`.`/charges`", "physical_plan"),
        ("explain analyze SELECT count(*) FROM mystripeapi.charges", "analyzed_plan"),
        ("PIVOT (SELECT id, amount FROM mystripeapi.payouts) ON id USING sum(amount)", "pa_00004"),
        ("SELECT * FROM (PIVOT (FROM mystripeapi.payouts SELECT id) ON id) p", "pa_00004"),
        ("FROM mystripeapi.payouts PIVOT (count(*) FOR id IN ('pa_00001'))", "pa_00001"),
        ("UNPIVOT mystripeapi.payouts ON amount INTO NAME k VALUE v", "amount"),
        ("SELECT count(*) AS n FROM mystripeapi.Charges", "2500"),
        ("SELECT count(*) AS n FROM MyStripeAPI.CHARGES", "2500"),
        ('SELECT count(*) AS n FROM "MyStripeAPI"."Charges"', "2500"),
        ("SELECT count(*) AS n FROM `MyStripeAPI`.`/Charges`", "2500"),
        # The Drill form lists newest first, as the live list endpoint does.
        ("SELECT `mystripeapi`.`/Charges`.id FROM `mystripeapi`.`/Charges` LIMIT 1", "ch_02499"),
        ("SELECT " + "(" * 45 + "1" + ")" * 45 + " AS n", "1"),
        ("SELECT " + "(" * 400 + "1" + ")" * 400 + " AS n", "1"),
    ],
    ids=lambda value: value[:40],
)
def test_read_only_statements_run(warehouse, capsys, sql, expected):
    code, out, err = run(capsys, "query", sql, "--db", str(warehouse))
    assert (code, err) == (0, "")
    assert expected in out


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT " + "(" * 2000 + "1" + ")" * 2000, "nested too deeply"),
        ("EXPLAIN DELETE FROM mystripeapi.charges", "DELETE is not a query"),
        ("EXPLAIN ANALYZE DROP TABLE mystripeapi.charges", "DROP is not a query"),
        ("EXPLAIN SELECT * FROM mystripeapi.invoices", "unknown endpoint '/invoices'"),
        ("SELECT * FROM MyStripe.charges", "unknown data source 'mystripe'"),
    ],
    ids=["nesting", "explain-delete", "explain-analyze-drop", "explain-unknown", "other-source"],
)
def test_refused_in_one_line(warehouse, capsys, sql, message):
    before = digest(warehouse)
    code, out, err = run(capsys, "query", sql, "--db", str(warehouse))
    assert (code, out) == (2, "")
    assert err.startswith("stripe-dd query: error: ") and err.count("\n") == 1, err[:3000]
    assert message in err
    assert digest(warehouse) == before


SLOW = "SELECT sum(hash(i)) FROM range(1000000000000) t(i)"


def test_a_query_stops_at_its_timeout(warehouse):
    began = time.monotonic()
    proc = subprocess.run(
        [STRIPE_DD, "query", SLOW, "--db", str(warehouse), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 124, proc.stderr[-3000:]
    assert proc.stderr == (
        "stripe-dd query: error: the query ran longer than --timeout 1 s and was stopped "
        "(raise --timeout, or 0 for none)\n"
    )
    assert time.monotonic() - began < 30


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_timeout_is_a_number_of_seconds(warehouse, capsys, value):
    with pytest.raises(SystemExit) as stopped:
        main(["query", "SELECT 1", "--db", str(warehouse), "--timeout", value])
    assert stopped.value.code == 2
    assert "is not a number of seconds" in capsys.readouterr().err


def has_open(pid: int, path: Path) -> bool:
    try:
        return any(str(path) == os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process or a descriptor went away meanwhile
        return False


@pytest.mark.parametrize("argv", [["query", SLOW, "--timeout", "0"], ["query", SLOW]])
def test_ctrl_c_stops_a_query_in_one_line(warehouse, argv):
    proc = subprocess.Popen(
        [STRIPE_DD, *argv, "--db", str(warehouse)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        opened = time.monotonic() + 60
        while not has_open(proc.pid, warehouse) and time.monotonic() < opened:
            time.sleep(0.05)  # starting: a Ctrl-C now would be Python's KeyboardInterrupt
        time.sleep(1)  # the file is opened just before the query starts
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a query that Ctrl-C did not stop would run for hours
        proc.wait()
    assert proc.returncode == 130
    assert err == f"stripe-dd {argv[0]}: error: interrupted (Ctrl-C): the query was stopped\n"


@pytest.fixture(scope="module")
def fuzz_warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "secret.csv").write_text(f"secret\n{SECRET}\n")
    db = build_warehouse(root / "stripe.duckdb")
    return db, digest(db), sorted(root.iterdir())


def _fragments(secret: Path) -> list[str]:
    return [
        "SELECT",
        "*",
        "FROM",
        "WHERE",
        "LIMIT 2",
        ",",
        "(",
        ")",
        ";",
        "'",
        '"',
        "`",
        ".",
        "/",
        "`mystripeapi`.`/charges`",
        "mystripeapi.refunds",
        "`otherstripe`",
        "`/payouts`",
        "COPY",
        "TO",
        "'out.csv'",
        "ATTACH",
        "DETACH",
        "INSTALL",
        "LOAD",
        "httpfs",
        "SET",
        "RESET",
        "PRAGMA",
        "CALL",
        "EXPORT DATABASE",
        "INSERT INTO",
        "VALUES (1)",
        "UPDATE",
        "DELETE",
        "DROP",
        "CREATE TABLE",
        "ALTER",
        "WITH x AS",
        "UNION",
        "INTO",
        "USE",
        "read_csv",
        "read_text",
        "read_blob",
        "glob",
        "read_parquet",
        "sniff_csv",
        "query",
        f"'{secret}'",
        f"('{secret}')",
        f'"{secret}"',
        "enable_external_access",
        "=",
        "true",
        "lock_configuration",
        "CHECKPOINT",
        "DESCRIBE",
        "SHOW TABLES",
        "SUMMARIZE",
        "--",
        "/*",
    ]


def _sql(secret: Path) -> st.SearchStrategy[str]:
    """Glued keywords and noise, plus well-formed reads of real, odd and hostile names."""
    name = st.one_of(
        st.sampled_from(["mystripeapi", "otherstripe", "partial", "Stripe", "my-src", "main"]),
        st.text(min_size=1, max_size=8),
    )
    table = st.one_of(st.sampled_from(ENDPOINTS), st.text(max_size=8), st.just(str(secret)))
    reference = st.builds(
        lambda s, t, drill: f"`{s}`.`/{t}`" if drill else f'"{s}"."{t}"', name, table, st.booleans()
    )
    glued = st.lists(
        st.one_of(st.sampled_from(_fragments(secret)), reference, st.text(max_size=6)), max_size=12
    ).map(" ".join)
    real = [f"`{s}`.`/{t}`" for s, tables in ROWS.items() for t in tables]
    shaped = st.builds(
        "SELECT {} FROM {} {}".format,
        st.sampled_from(["*", "id", "count(*)", "metadata->>'order'", "max(created)"]),
        st.one_of(st.sampled_from(real), reference),
        st.sampled_from(
            [
                "",
                "LIMIT 1000",
                "WHERE amount > 100",
                "; DROP TABLE x",
                "INTO t",
                f", read_csv('{secret}')",
                f"UNION ALL SELECT * FROM read_text('{secret}')",
                f"WHERE id IN (SELECT content FROM read_text('{secret}'))",
                f"WHERE id IN (SELECT * FROM '{secret}')",
            ]
        ),
    )
    return st.one_of(glued, shaped)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_input_writes_reads_outside_or_crashes(fuzz_warehouse, data):
    db, before, files = fuzz_warehouse
    sql = data.draw(_sql(db.with_name("secret.csv")), label="sql")
    fmt = data.draw(st.sampled_from(["table", "csv", "json"]), label="format")
    out = io.StringIO()
    try:
        query(sql, db, fmt, out)
    except UserError as exc:
        assert "\n" not in str(exc)
        out.write(str(exc))
        event(" ".join(str(exc).split()[:2]))
    else:
        event("ran")
    assert SECRET not in out.getvalue()
    assert (digest(db), sorted(db.parent.iterdir())) == (before, files)
