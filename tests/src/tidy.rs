//! Workspace tidiness, checked inside `cargo test` (rust-analyzer's tidy): every source file says
//! what it is for in a `//!` line, no file grows past `MAX_LINES` without writing down why at its
//! top, no test is skipped by the ignore attribute without saying which prerequisite it waits for,
//! and only the host-exec module starts processes. `unwrap`/`expect` outside tests and `Command::new` are
//! refused by clippy (`clippy.toml`, `[workspace.lints]`); this covers what clippy cannot.

use std::path::{Path, PathBuf};

/// A file longer than this starts with a `//!` line containing `tidy: long because`.
const MAX_LINES: usize = 600;

/// The ignore attribute's opening, spelled in two parts so this file does not match itself.
const IGNORE: &str = concat!("#[", "ignore");

/// The only files of the shipped crates that may start processes (the agent's and the device
/// client's exec modules). The test harness (`tests/`)
/// runs the project's binaries and lab tools by design.
const EXEC_MODULES: &[&str] = &["node-agent/src/host/exec.rs", "node-agent/src/exec.rs", "device-client/src/exec.rs"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_sources() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" && name != "vendor" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let rel = path.strip_prefix(&root).expect("under the root").to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {rel}: {e}"));
                out.push((rel, text));
            }
        }
    }
    out.sort();
    assert!(out.len() > 50, "tidy found only {} Rust files under {}", out.len(), root.display());
    out
}

fn header(text: &str) -> impl Iterator<Item = &str> {
    text.lines().take_while(|l| l.starts_with("//!") || l.starts_with("#!") || l.trim().is_empty())
}

#[test]
fn every_source_file_starts_with_a_doc_line() {
    let missing: Vec<String> =
        rust_sources().into_iter().filter(|(_, text)| !text.starts_with("//!")).map(|(rel, _)| rel).collect();
    assert!(missing.is_empty(), "files without a leading `//!` line saying what they are for: {missing:#?}");
}

#[test]
fn long_files_say_why_at_the_top() {
    let long: Vec<String> = rust_sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .filter(|(_, text)| !header(text).any(|l| l.contains("tidy: long because")))
        .map(|(rel, text)| format!("{rel}: {} lines", text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines: split them by concern, or write `//! tidy: long because …` at the top: {long:#?}"
    );
}

#[test]
fn ignored_tests_name_their_prerequisite() {
    let bare: Vec<String> = rust_sources()
        .into_iter()
        .flat_map(|(rel, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with(IGNORE) && !l.contains(&format!("{IGNORE} = \"")))
                .map(|(i, _)| format!("{rel}:{}", i + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(bare.is_empty(), "tests ignored without a reason (write `{IGNORE} = \"needs …\"]`): {bare:#?}");
}

#[test]
fn only_the_exec_module_starts_processes() {
    let offenders: Vec<String> = rust_sources()
        .into_iter()
        .filter(|(rel, _)| !rel.starts_with("tests/") && !EXEC_MODULES.contains(&rel.as_str()))
        .filter(|(_, text)| text.contains("Command::new") || text.contains("process::Command"))
        .map(|(rel, _)| rel)
        .collect();
    assert!(offenders.is_empty(), "processes started outside the exec module: {offenders:#?}");
}

/// The coordinator's layers, lowest first: a module may import only modules of its own layer or
/// below (`state/` pure; `raft/` and `transport/` never reach the `Coordinator`; handlers never
/// run listeners). A `use crate::X` edge upwards is an import cycle in the making.
const COORDINATOR_LAYERS: &[(&str, &[&str])] = &[
    ("state", &["state", "time"]),
    ("backupkey", &["backupkey", "state", "datadir"]),
    ("backupprogress", &["backupprogress"]),
    ("transport", &["transport", "state", "time", "admission", "refusals", "datadir"]),
    ("raft", &["raft", "state", "time", "transport", "datadir"]),
    (
        "server",
        &[
            "server",
            "raft",
            "state",
            "time",
            "transport",
            "admission",
            "refusals",
            "datadir",
            "apicalls",
            "backupkey",
            "branding",
            "backupprogress",
        ],
    ),
    ("siem", &["siem", "server", "raft", "state", "time", "datadir"]),
    ("snapshotfile", &["snapshotfile", "raft", "state", "backupkey"]),
];

#[test]
fn coordinator_layers_import_only_downwards() {
    let mut offenders = Vec::new();
    for (rel, text) in rust_sources() {
        let Some(path) = rel.strip_prefix("coordinator/src/") else { continue };
        let module = path.split(['/', '.']).next().unwrap_or_default();
        let Some((_, allowed)) = COORDINATOR_LAYERS.iter().find(|(m, _)| *m == module) else { continue };
        for (at, _) in text.match_indices("crate::") {
            let used: String =
                text[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !allowed.contains(&used.as_str()) {
                offenders.push(format!("{rel} imports crate::{used}"));
            }
        }
    }
    assert!(offenders.is_empty(), "coordinator imports against the layering: {offenders:#?}");
}
