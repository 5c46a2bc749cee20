//! `remdb shell` fed from a pipe, as scripts use it. (The terminal side, Ctrl-C and
//! history, is driven through a pseudo-terminal by tests/e2e/test_shell.py.)

use std::io::Write;
use std::process::{Command, Stdio};

fn shell(path: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_remdb"))
        .args(["shell", "--path", path, "--tenant", "acme", "--create"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run remdb shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn piped_statements_span_lines_and_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap();
    let included = dir.path().join("more.sql");
    std::fs::write(
        &included,
        "SELECT 'from the file' AS src;\nSELECT 2 AS two;",
    )
    .unwrap();

    let script = format!(
        "\
INSERT INTO entities (id, type, name)
  VALUES ('e1', 'person', 'Ada'),
         ('e2', 'person', 'Alan; Turing');
SELECT name
FROM entities
ORDER BY name;
\\d
\\d entities
\\format csv
SELECT id, name FROM entities ORDER BY id;
\\d edges
\\format tsv
SELECT id, name FROM entities ORDER BY id;
\\format ndjson
SELECT id FROM entities WHERE id = 'e1';
\\format table
\\maxrows 1
SELECT id FROM entities ORDER BY id;
\\maxrows inf
\\i {}
\\h repeat
SELECT 'a command inside'
\\timing on
  AS unfinished;
\\q
SELECT 'never reached';
",
        included.display()
    );
    let (ok, out, err) = shell(path, &[], &script);
    assert!(ok, "{err}");
    // The multi-line statement ran, the ';' inside the literal did not end it.
    assert!(out.contains("| Alan; Turing |"), "{out}");
    // \d lists the tables from information_schema, by the result writers.
    assert!(out.contains("| entities   | BASE TABLE |"), "{out}");
    assert!(out.contains("| traverse("), "{out}");
    // \d entities: columns and indexes, in the table format.
    assert!(out.contains("| properties  | Utf8"), "{out}");
    assert!(out.contains("| entities_type"), "{out}");
    // \d edges under \format csv is CSV too.
    assert!(
        out.contains("column_name,data_type,is_nullable\nsrc,Utf8,YES"),
        "{out}"
    );
    // csv, tsv, then ndjson.
    assert!(out.contains("id,name\ne1,Ada\ne2,Alan; Turing\n"), "{out}");
    assert!(
        out.contains("id\tname\ne1\tAda\ne2\tAlan; Turing\n"),
        "{out}"
    );
    assert!(out.contains("{\"id\":\"e1\"}"), "{out}");
    // \maxrows 1, then all rows again for \i's statements.
    assert!(out.contains("(2 rows, the first 1 shown"), "{out}");
    assert!(
        out.contains("from the file") && out.contains("| 2   |"),
        "{out}"
    );
    // \h repeat: DataFusion's documentation of the function.
    assert!(
        out.contains("repeat: Returns a string with an input string repeated"),
        "{out}"
    );
    // A command inside an unfinished statement runs, and the statement goes on; with
    // \timing the footer follows each result; \q stops before the last statement.
    assert!(out.contains("a command inside"), "{out}");
    assert!(out.contains("1 row fetched. Elapsed "), "{out}");
    assert!(!out.contains("never reached"), "{out}");
}

#[test]
fn an_error_prints_and_the_shell_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap();
    let (ok, out, err) = shell(
        path,
        &[],
        "SELECT * FROM nowhere;\n\\bogus\nSELECT 41 + 1 AS answer;\nSELECT 'no semicolon at the end'",
    );
    // Both errors are reported, the statements after them ran, and the exit status says
    // that something failed.
    assert!(!ok);
    assert!(err.contains("nowhere"), "{err}");
    assert!(err.contains("unknown command \\bogus"), "{err}");
    assert!(err.contains("2 statements failed"), "{err}");
    assert!(out.contains("| 42     |"), "{out}");
    assert!(out.contains("no semicolon at the end"), "{out}");
}

#[test]
fn command_option_format_and_maxrows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let path = path.to_str().unwrap();
    let (ok, out, err) = shell(
        path,
        &[
            "--maxrows",
            "3",
            "-c",
            "SELECT value FROM generate_series(1, 10) ORDER BY value",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("| 3     |") && !out.contains("| 4     |"),
        "{out}"
    );
    assert!(out.contains("(10 rows, the first 3 shown"), "{out}");

    let (ok, out, err) = shell(
        path,
        &["--format", "json", "-c", "SELECT 1 AS a, 'x' AS b"],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"[{"a":1,"b":"x"}]"#);

    // A result without rows keeps its header line in CSV.
    let (ok, out, err) = shell(
        path,
        &[
            "--format",
            "csv",
            "-c",
            "SELECT 1 AS a, 'x' AS b WHERE false",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "a,b");

    // -c stops at the first error, with a non-zero exit.
    let (ok, _, err) = shell(
        path,
        &["-c", "SELECT 1; SELECT * FROM nowhere; SELECT 2"],
        "",
    );
    assert!(!ok && err.contains("nowhere"), "{err}");
    let (ok, _, err) = shell(path, &["--format", "xml", "-c", "SELECT 1"], "");
    assert!(!ok && err.contains("xml"), "{err}");
}
