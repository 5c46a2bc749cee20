//! The `remdb` binary, run as a user runs it.

use std::process::Command;

fn remdb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remdb"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run remdb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sql_command_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap();

    // An unknown tenant is an error unless --create is given.
    let (ok, _, err) =
        run(remdb().args(["sql", "--path", path, "--tenant", "acme", "-c", "SELECT 1"]));
    assert!(!ok && err.contains("tenant 'acme' does not exist"), "{err}");

    let (ok, out, err) = run(remdb().args([
        "sql", "--path", path, "--tenant", "acme", "--create", "-c",
        "INSERT INTO entities (id, type, name) VALUES ('e1', 'person', 'Ada'), ('e2', 'project', 'remdb'); SELECT id, name FROM entities WHERE type = 'person'",
    ]));
    assert!(ok, "{err}");
    assert!(out.contains("| e1 | Ada  |"), "{out}");

    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "SELECT count(*) AS n FROM entities;\nSELECT name FROM entities WHERE id = 'e2';\n",
    )
    .unwrap();
    let (ok, out, err) = run(remdb().args([
        "sql",
        "--path",
        path,
        "--tenant",
        "acme",
        "-f",
        script.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    assert!(out.contains("| 2 |") && out.contains("| remdb |"), "{out}");

    // No rows: the columns and a count are still shown.
    let (ok, out, err) = run(remdb().args([
        "sql",
        "--path",
        path,
        "--tenant",
        "acme",
        "-c",
        "SELECT id, name FROM entities WHERE type = 'nobody'",
    ]));
    assert!(ok, "{err}");
    assert!(
        out.contains("| id | name |") && out.contains("(0 rows)"),
        "{out}"
    );

    // A bad statement: non-zero exit, one clear line, earlier output kept.
    let (ok, out, err) = run(remdb().args([
        "sql",
        "--path",
        path,
        "--tenant",
        "acme",
        "-c",
        "SELECT 1 AS one; SELECT * FROM nope",
    ]));
    assert!(
        !ok && out.contains("one") && err.starts_with("error: ") && err.contains("nope"),
        "{out}\n{err}"
    );

    let (ok, _, err) = run(remdb().args([
        "sql", "--path", path, "--tenant", "../x", "--create", "-c", "SELECT 1",
    ]));
    assert!(!ok && err.contains("tenant id"), "{err}");

    // A local user exports with COPY to a path: each statement of a script runs as
    // written (a statement printed and parsed again lost the quotes of its path).
    let out_csv = dir.path().join("out").join("one.csv");
    std::fs::create_dir_all(out_csv.parent().unwrap()).unwrap();
    let copy = format!(
        "COPY (SELECT 'a;b' AS x) TO '{}' STORED AS CSV; SELECT 2 AS y",
        out_csv.display()
    );
    let (ok, out, err) =
        run(remdb().args(["sql", "--path", path, "--tenant", "acme", "-c", &copy]));
    assert!(ok && out.contains('2'), "{out}\n{err}");
    let written = std::fs::read_to_string(&out_csv).unwrap();
    assert!(written.contains("a;b"), "{written}");

    // Statements from standard input: `-f -`, or a pipe without -c / -f.
    for args in [&["-f", "-"][..], &[][..]] {
        use std::io::Write;
        let mut child = remdb()
            .args(["sql", "--path", path, "--tenant", "acme"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"SELECT 40 + 2 AS answer;\nSELECT 'two' AS second")
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("42") && stdout.contains("two"),
            "{args:?}: {stdout}\n{stderr}"
        );
    }

    // A timeout too large for a Duration is an error, not a panic at start.
    let (ok, _, err) = run(remdb().args([
        "serve",
        "--path",
        path,
        "--listen",
        "127.0.0.1:0",
        "--query-timeout",
        "1e30",
    ]));
    assert!(!ok && err.contains("at most a year"), "{err}");

    let (ok, out, _) = run(remdb().args(["tenant", "list", "--path", path]));
    assert!(ok && out.trim() == "acme", "{out}");
}

#[test]
fn demo_shows_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo");
    let (ok, out, err) = run(remdb().args(["demo", "--path", path.to_str().unwrap()]));
    assert!(ok, "{err}");
    assert!(
        out.contains("Ada Lovelace") && out.contains("engineer") && out.contains("works_on"),
        "{out}"
    );
    // A vector search (the SQL chunk first), the same search filtered through the JSON
    // index, its plan, a traversal and a time window.
    let search = out.split("-- vector search").nth(1).unwrap_or_default();
    let first_row = search
        .lines()
        .find(|l| l.starts_with("| design-"))
        .unwrap_or_default();
    assert!(first_row.starts_with("| design-2 "), "{out}");
    assert!(
        out.contains("candidates=index set idx_language = 'en'"),
        "{out}"
    );
    assert!(out.contains("[grace, ada, alan]"), "{out}");
    assert!(
        out.contains("| m2 | conversation | 2026-01-02T00:00:00Z"),
        "{out}"
    );
    assert!(!out.contains("| m3 "), "{out}");
    // A second run reuses the data instead of failing on duplicates.
    let (ok, _, err) = run(remdb().args(["demo", "--path", path.to_str().unwrap()]));
    assert!(ok, "{err}");
}
