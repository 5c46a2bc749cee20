"""`remdb shell` on a terminal (a pseudo-terminal): prompts, multi-line statements,
Ctrl-C cancelling a running query without leaving the shell, and persistent history."""

import os
import tempfile

import pexpect

from conftest import REMDB


def spawn(path, history):
    env = dict(os.environ, REMDB_HISTORY=history, REMDB_LOG="warn", TERM="xterm")
    return pexpect.spawn(
        REMDB, ["shell", "--path", path, "--tenant", "acme", "--create"],
        env=env, encoding="utf-8", timeout=60, dimensions=(40, 200),
    )


def test_interactive_shell_cancels_with_ctrl_c_and_keeps_history():
    tmp = tempfile.mkdtemp(prefix="remdb-shell-")
    path = os.path.join(tmp, "db")
    history = os.path.join(tmp, "history")
    sh = spawn(path, history)
    sh.expect("acme> ")
    # A statement over two lines: the continuation prompt, then the result.
    # A statement over two lines: one input (the validator reads the SQL tokens), then
    # the result and the footer.
    sh.sendline("SELECT 40 + 2")
    sh.sendline("  AS answer;")
    sh.expect(r"\| 42 +\|")
    sh.expect(r"1 row fetched\. Elapsed \d+\.\d{3} seconds\.")
    sh.expect("acme> ")
    # Tab completes a table name and a column.
    sh.send("SELECT na\t")
    sh.expect_exact("SELECT name")
    sh.send(" FROM entit\t")
    sh.expect_exact("FROM entities")
    sh.sendline(";")
    sh.expect(r"\| name \|")
    sh.expect("0 rows")
    sh.expect("acme> ")
    # Ctrl-C cancels a long query and the shell stays.
    sh.sendline("SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3;")
    sh.expect_exact("SELECT count(*)")
    import time
    time.sleep(1.5)
    sh.sendintr()
    sh.expect("query cancelled")
    sh.expect("acme> ")
    # Also inside one long computation (a minute of levenshtein in one call, which
    # never reaches a batch boundary): the prompt is back within a second or two.
    sh.sendline("SELECT levenshtein(repeat('a', 150000), repeat('b', 150000));")
    sh.expect_exact("levenshtein(")
    time.sleep(1.5)
    started = time.monotonic()
    sh.sendintr()
    sh.expect("query cancelled", timeout=5)
    sh.expect("acme> ", timeout=5)
    assert time.monotonic() - started < 3
    sh.sendline("\\timing on")
    sh.expect("timing is on")
    sh.sendline("SELECT 'still here' AS s;")
    sh.expect("still here")
    sh.expect("1 row fetched. Elapsed")
    # Ctrl-C while typing drops the line, not the shell.
    sh.send("SELECT 'dropped'")
    sh.sendintr()
    sh.expect("acme> ")
    # \\q inside an unfinished statement quits, as in psql.
    sh.sendline("SELECT 'unfinished'")
    sh.sendline("\\q")
    sh.expect(pexpect.EOF)
    sh.close()
    assert sh.exitstatus == 0
    # The history survives the session, a statement of two lines as one entry.
    with open(history) as f:
        saved = f.read()
    assert "SELECT 'still here' AS s;" in saved
    entries = [line for line in saved.splitlines() if "40 + 2" in line]
    assert len(entries) == 1 and "AS answer;" in entries[0], saved
    sh = spawn(path, history)
    sh.expect("acme> ")
    sh.sendcontrol("p")  # the saved history: the unfinished statement with its \\q
    sh.expect(r"\\q")
    sh.sendcontrol("p")
    sh.expect("still here")
    sh.sendcontrol("c")
    sh.expect("acme> ")
    sh.sendeof()
    sh.expect(pexpect.EOF)


def test_a_typed_password_is_not_echoed():
    tmp = tempfile.mkdtemp(prefix="remdb-password-")
    path = os.path.join(tmp, "db")
    env = dict(os.environ, REMDB_LOG="warn", TERM="xterm")
    env.pop("REMDB_PASSWORD", None)
    create = pexpect.spawn(REMDB, ["tenant", "create", "--path", path, "acme"],
                           env=env, encoding="utf-8", timeout=60)
    create.expect(pexpect.EOF)
    create.close()
    assert create.exitstatus == 0
    term = pexpect.spawn(REMDB, ["tenant", "add-user", "--path", path, "acme", "ada"],
                         env=env, encoding="utf-8", timeout=60)
    term.expect("password: ")
    term.sendline("s3cret-typed")
    term.expect(pexpect.EOF)
    shown = term.before
    term.close()
    assert term.exitstatus == 0, shown
    assert "s3cret-typed" not in shown, shown
    from conftest import remdb
    assert "ada" in remdb("tenant", "users", "--path", path).stdout


def test_long_work_shows_a_progress_bar_on_a_terminal():
    tmp = tempfile.mkdtemp(prefix="remdb-progress-")
    sh = spawn(os.path.join(tmp, "db"), os.path.join(tmp, "history"))
    sh.expect("acme> ")
    # A bulk insert of 30,000 rows: a counter once it passes 10,000.
    sh.sendline("INSERT INTO entities (id, type, name, properties) SELECT 'e' || value, "
                "'person', 'n' || value, '{\"k\": 1}' FROM generate_series(1, 30000);")
    sh.expect("rows into entities")
    sh.expect(r"\| 30000 \|")
    sh.expect("acme> ")
    # An index build over them: a bar with the total.
    sh.sendline("CREATE INDEX idx_k ON entities ((properties->>'k'));")
    sh.expect(r"CREATE INDEX idx_k \(acme\) \[")
    sh.expect("30,000/30,000")
    sh.expect("acme> ")
    # Small work shows nothing.
    sh.sendline("INSERT INTO entities (id, type, name) VALUES ('x', 'person', 'X');")
    sh.expect(r"\| 1     \|")
    assert "rows into" not in sh.before
    sh.expect("acme> ")
    sh.sendline("\\q")
    sh.expect(pexpect.EOF)
