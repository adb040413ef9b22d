//! `warden new` and `warden build`: a task project from nothing to a component. A new project
//! is self-contained: it carries the WIT contract (`wit/task.wit`) and, for Rust, a copy of
//! the guest SDK (`warden-guest/`), both as this binary was built with, so it builds wherever
//! it is moved. `warden build` detects the language and runs its toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Failure;
use super::output::exit;

/// The WIT contract every task implements.
const WIT: &str = include_str!("../../../wit/task.wit");
/// The Rust guest SDK, copied into each Rust project.
const SDK_LIB: &str = include_str!("../../../guest-sdk/src/lib.rs");

/// Languages of `warden new --lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the guest SDK (`cargo build --target wasm32-wasip2`).
    Rust,
    /// Python with componentize-py (not yet available).
    Python,
    /// JavaScript with componentize-js (not yet available).
    Js,
}

/// Rust's reserved words: a task named like one would not compile.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self",
    "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become",
    "box", "do", "final", "macro", "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// The task name of a project name: hyphens become underscores.
fn task_name(name: &str) -> String {
    name.replace('-', "_")
}

/// A project name: lower-case ASCII letters, digits, `-` and `_`, starting with a letter, at
/// most 64 characters, and not a Rust keyword once hyphens are underscores.
fn check_name(name: &str) -> Result<(), Failure> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "`{name}` cannot name a task project: use lower-case letters, digits, `-` and `_`, starting with a \
                 letter (at most 64), e.g. `word-count`"
            ),
        ));
    }
    if KEYWORDS.contains(&task_name(name).as_str()) {
        return Err(Failure::new(
            exit::USAGE,
            format!("`{name}` is a Rust keyword; pick another name, e.g. `{name}-task`"),
        ));
    }
    Ok(())
}

/// `warden new NAME [--lang L] [--path DIR]`: creates `DIR/NAME` (DIR defaults to the current
/// directory) and returns it.
pub fn new(name: &str, lang: Lang, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    if lang != Lang::Rust {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "`warden new --lang {}` is not available yet; use `--lang rust` (the default)",
                if lang == Lang::Python { "python" } else { "js" }
            ),
        )
        .into());
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(Failure::new(
            exit::USAGE,
            format!("{} already exists; pick another name or remove it", dir.display()),
        )
        .into());
    }
    let task = task_name(name);
    let files: [(&str, String); 7] = [
        ("Cargo.toml", rust_manifest(name)),
        ("src/lib.rs", rust_task(&task)),
        (
            "README.md",
            format!(
                "# {name}\n\nA Warden task: `warden build` makes `target/wasm32-wasip2/release/{task}.wasm`, `warden deploy` \
                 uploads it,\nand `warden call {task} '{{\"name\":\"Ada\"}}' --wait` runs it.\n"
            ),
        ),
        (".gitignore", "/target\n".into()),
        ("wit/task.wit", WIT.into()),
        ("warden-guest/Cargo.toml", SDK_MANIFEST.into()),
        ("warden-guest/src/lib.rs", SDK_LIB.into()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| Failure::new(exit::USAGE, format!("cannot create {}: {e}", p.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| Failure::new(exit::USAGE, format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(dir)
}

/// The vendored SDK's manifest: the versions the workspace builds the SDK with (a unit test
/// checks they match).
const SDK_MANIFEST: &str = r#"[package]
name = "warden-guest"
description = "Write Warden tasks in Rust (a copy made by `warden new`)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
wit-bindgen = { version = "0.46", default-features = false, features = ["macros", "realloc", "std"] }
"#;

fn rust_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
warden-guest = {{ path = "warden-guest" }}

# A project of its own, not a member of an enclosing workspace.
[workspace]
members = ["warden-guest"]

# Small components, quick builds.
[profile.release]
opt-level = "s"
debug = false
strip = "debuginfo"
codegen-units = 16
"#
    )
}

fn rust_task(task: &str) -> String {
    format!(
        r#"//! The `{task}` task: called with `{{}}` it greets the world, with `{{"name":"Ada"}}` Ada.

use serde::{{Deserialize, Serialize}};
use warden_guest::TaskError;

#[derive(Deserialize)]
struct Args {{
    /// Who to greet (default: world).
    #[serde(default)]
    name: Option<String>,
}}

#[derive(Serialize)]
struct Reply {{
    greeting: String,
}}

/// Greets someone. Return `Err(TaskError::retryable(..))` for a failure another attempt may
/// fix, `TaskError::fatal(..)` for one it cannot.
fn {task}(args: Args) -> Result<Reply, TaskError> {{
    let name = args.name.unwrap_or_else(|| "world".into());
    warden_guest::log::info(format!("greeting {{name}}"));
    Ok(Reply {{ greeting: format!("Hello, {{name}}!") }})
}}

warden_guest::export_tasks! {{
    {task} {{ description: "Greets someone", max_attempts: 3 }},
}}
"#
    )
}

/// A built component: its path and the component name to deploy it under.
pub struct Built {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// The project's name.
    pub name: String,
}

/// `warden build [--path DIR]`: builds the project in `dir` with its language's toolchain.
pub fn build(dir: &Path) -> anyhow::Result<Built> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        let hint = if dir.join("pyproject.toml").is_file() || dir.join("package.json").is_file() {
            "Python and JavaScript projects are not built by `warden build` yet"
        } else {
            "create one with `warden new NAME`, or pass --path"
        };
        return Err(
            Failure::new(exit::USAGE, format!("no task project in {} (no Cargo.toml): {hint}", dir.display())).into()
        );
    }
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", manifest.display())))?;
    let name = package_name(&text)
        .ok_or_else(|| Failure::new(exit::USAGE, format!("{} has no [package] name", manifest.display())))?;
    eprintln!("building {name} (cargo build --target wasm32-wasip2 --release)");
    let status = Command::new("cargo")
        .args(["build", "--target", "wasm32-wasip2", "--release", "--manifest-path"])
        .arg(&manifest)
        .status()
        .map_err(|e| {
            Failure::new(exit::USAGE, format!("cannot run cargo: {e}; install Rust from https://rustup.rs"))
        })?;
    if !status.success() {
        return Err(Failure::new(
            1,
            format!(
                "cargo could not build {name} (see above); if the target is missing: `rustup target add wasm32-wasip2`"
            ),
        )
        .into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let path = target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
    if !path.is_file() {
        return Err(Failure::new(1, format!("cargo finished but {} is missing", path.display())).into());
    }
    Ok(Built { path, name })
}

/// The `[package] name` of a Cargo manifest.
fn package_name(manifest: &str) -> Option<String> {
    let doc: toml::Table = manifest.parse().ok()?;
    doc.get("package")?.get("name")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_tasks_and_bad_names_say_why() {
        assert_eq!(task_name("word-count"), "word_count");
        assert!(check_name("word-count").is_ok());
        assert!(check_name("Word").unwrap_err().message.contains("lower-case"));
        assert!(check_name("9lives").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("type").unwrap_err().message.contains("keyword"));
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn the_vendored_sdk_uses_the_workspace_versions() {
        let workspace: toml::Table = include_str!("../../../Cargo.toml").parse().expect("workspace manifest");
        let deps = &workspace["workspace"]["dependencies"];
        let sdk: toml::Table = SDK_MANIFEST.parse().expect("SDK manifest");
        for dep in ["serde", "serde_json", "wit-bindgen"] {
            assert_eq!(sdk["dependencies"][dep], deps[dep], "{dep}");
        }
        let sdk_manifest: toml::Table = include_str!("../../../guest-sdk/Cargo.toml").parse().expect("SDK");
        let used: Vec<&String> = sdk_manifest["dependencies"].as_table().expect("deps").keys().collect();
        assert_eq!(used, vec!["serde", "serde_json", "wit-bindgen"], "the SDK's dependencies changed");
        assert_eq!(package_name(&rust_manifest("my-task")).as_deref(), Some("my-task"));
    }
}
