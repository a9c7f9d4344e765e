//! Runs the Python client's test suite (`client/python/tests`, standard-library `unittest`)
//! against the daemon this build made, so that `cargo test --workspace` tests the Python
//! client too. Needs `python3` 3.9 or later on the PATH; fails, saying so, without it.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_authenta-keyd");

/// The oldest Python the client supports (`requires-python` in its pyproject.toml).
const MIN_PYTHON: (u32, u32) = (3, 9);

#[test]
fn python_client_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_python();
    let out = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "client/python/tests",
            "-v",
        ])
        .current_dir(root)
        .env("AUTHENTA_KEYD_BIN", BIN)
        .env("PYTHONPATH", root.join("client/python/src"))
        // No __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("AUTHENTA_SOCKET")
        .env_remove("AUTHENTA_KEY")
        .output()
        .expect("run python3 -m unittest");
    assert!(
        out.status.success(),
        "the Python client's tests failed ({}):\n{}",
        out.status,
        printed(&out)
    );
    // unittest reports on stderr; shown with `cargo test -- --nocapture`.
    eprintln!("{}", printed(&out));
}

/// Fails with what to do when `python3` is missing or too old.
fn check_python() {
    let out = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is needed to test the Python client (client/python): {e}. Install \
                 Python {}.{} or later (e.g. apt-get install python3)",
                MIN_PYTHON.0, MIN_PYTHON.1
            )
        });
    assert!(out.status.success(), "python3 failed: {}", printed(&out));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let parsed = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
    match parsed {
        Some(found) if found >= MIN_PYTHON => {}
        _ => panic!(
            "python3 is {version}: the Python client (client/python) needs {}.{} or later; \
             install a newer python3 or put one first on the PATH",
            MIN_PYTHON.0, MIN_PYTHON.1
        ),
    }
}

fn printed(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
