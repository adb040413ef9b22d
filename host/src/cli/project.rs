//! `warden new` and `warden build`: a task project from nothing to a component. A new project
//! is self-contained: it carries the WIT contract (`wit/task.wit`) and its language's guest
//! helper (Rust: a copy of the guest SDK in `warden-guest/`; Python: `warden_task.py`;
//! JavaScript: `warden_task.js`), as this binary was built with, so it builds wherever it is
//! moved. `warden build` detects the language and runs its toolchain: cargo for Rust,
//! componentize-py for Python (installed into a cached virtual environment on first use),
//! componentize-js for JavaScript (installed with npm into the same cache on first use). The
//! toolchains' chatter goes to stderr: stdout is the component's path only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Failure;
use super::output::exit;

/// The WIT contract every task implements.
const WIT: &str = include_str!("../../../wit/task.wit");
/// The Rust guest SDK, copied into each Rust project.
const SDK_LIB: &str = include_str!("../../../guest-sdk/src/lib.rs");
/// The Python guest helper, copied into each Python project.
const PY_HELPER: &str = include_str!("../../../guest-sdk/python/warden_task.py");
/// The componentize-py release `warden build` installs when none is on the PATH.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The JavaScript guest helper, copied into each JavaScript project (its entry point).
const JS_HELPER: &str = include_str!("../../../guest-sdk/js/warden_task.js");
/// The npm packages `warden build` installs for JavaScript: componentize-js, whose own CLI
/// builds the component, and the jco it runs with.
const COMPONENTIZE_JS: &[&str] = &["@bytecodealliance/componentize-js@0.23.0", "@bytecodealliance/jco@1.35.0"];
/// The cache directory of that install (under `warden/` of the user's cache).
const COMPONENTIZE_JS_DIR: &str = "componentize-js-0.23.0";

/// Languages of `warden new --lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the guest SDK (`cargo build --target wasm32-wasip2`).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js (`run` is synchronous).
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
    let dir = parent.join(name);
    if dir.exists() {
        return Err(Failure::new(
            exit::USAGE,
            format!("{} already exists; pick another name or remove it", dir.display()),
        )
        .into());
    }
    let task = task_name(name);
    let files = match lang {
        Lang::Rust => rust_files(name, &task),
        Lang::Python => python_files(name, &task),
        Lang::Js => js_files(name, &task),
    };
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

fn readme(name: &str, task: &str, wasm: &str) -> String {
    format!(
        "# {name}\n\nA Warden task: `warden build` makes `{wasm}`, `warden deploy` uploads it,\nand `warden call {task} \
         '{{\"name\":\"Ada\"}}' --wait` runs it.\n"
    )
}

fn python_files(name: &str, task: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", python_task(task)),
        ("warden_task.py", PY_HELPER.into()),
        (
            "pyproject.toml",
            format!("[project]\nname = \"{name}\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\n"),
        ),
        ("README.md", readme(name, task, &format!("target/{name}.wasm"))),
        (".gitignore", "/target\n/wit_world\n/componentize_py_*\n__pycache__/\n".into()),
        ("wit/task.wit", WIT.into()),
    ]
}

fn python_task(task: &str) -> String {
    format!(
        r#""""The `{task}` task: called with {{}} it greets the world, with {{"name": "Ada"}} Ada."""

from warden_task import Handler, TaskError, log, task  # noqa: F401 (Handler is the component's export)


@task(max_attempts=3)
def {task}(args):
    """Greets someone. Raise TaskError.retryable(...) for a failure another attempt may fix,
    TaskError.fatal(...) for one it cannot."""
    name = args.get("name", "world")
    if not isinstance(name, str):
        raise TaskError.invalid_args("name must be a string")
    log(f"greeting {{name}}")
    return {{"greeting": f"Hello, {{name}}!"}}
"#
    )
}

fn js_files(name: &str, task: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.js", js_task(task)),
        ("warden_task.js", JS_HELPER.into()),
        (
            "package.json",
            format!(
                "{{\n  \"name\": \"{name}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \"type\": \"module\"\n}}\n"
            ),
        ),
        ("README.md", readme(name, task, &format!("target/{name}.wasm"))),
        (".gitignore", "/target\n/node_modules\n".into()),
        ("wit/task.wit", WIT.into()),
    ]
}

fn js_task(task: &str) -> String {
    format!(
        r#"// The `{task}` task: called with {{}} it greets the world, with {{"name": "Ada"}} Ada.
// `run` is synchronous and returns any JSON value; throw TaskError.retryable(...) for a failure
// another attempt may fix, TaskError.fatal(...) for one it cannot (warden_task.js says more).

import {{ TaskError, log }} from './warden_task.js';

export const tasks = {{
  {task}: {{
    description: 'Greets someone',
    maxAttempts: 3,
    run(args) {{
      const name = args.name ?? 'world';
      if (typeof name !== 'string') throw TaskError.invalidArgs('name must be a string');
      log(`greeting ${{name}}`);
      return {{ greeting: `Hello, ${{name}}!` }};
    }},
  }},
}};
"#
    )
}

fn rust_files(name: &str, task: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Cargo.toml", rust_manifest(name)),
        ("src/lib.rs", rust_task(task)),
        ("README.md", readme(name, task, &format!("target/wasm32-wasip2/release/{task}.wasm"))),
        (".gitignore", "/target\n".into()),
        ("wit/task.wit", WIT.into()),
        ("warden-guest/Cargo.toml", SDK_MANIFEST.into()),
        ("warden-guest/src/lib.rs", SDK_LIB.into()),
    ]
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
    // Absolute, so that a relative `--path` holds for tools run inside the project.
    let dir = &std::path::absolute(dir)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot resolve {}: {e}", dir.display())))?;
    if dir.join("app.py").is_file() && dir.join("pyproject.toml").is_file() {
        return build_python(dir);
    }
    if dir.join("app.js").is_file() && dir.join("package.json").is_file() {
        return build_js(dir);
    }
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "no task project in {} (no Cargo.toml, nor app.py with pyproject.toml, nor app.js with package.json): \
                 create one with `warden new NAME [--lang rust|python|js]`, or pass --path",
                dir.display()
            ),
        )
        .into());
    }
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", manifest.display())))?;
    let name = package_name(&text)
        .ok_or_else(|| Failure::new(exit::USAGE, format!("{} has no [package] name", manifest.display())))?;
    eprintln!("building {name} (cargo build --target wasm32-wasip2 --release)");
    let status = Command::new("cargo")
        .args(["build", "--target", "wasm32-wasip2", "--release", "--manifest-path"])
        .arg(&manifest)
        .stdout(Stdio::from(std::io::stderr()))
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

/// The `[package] name` of a Cargo manifest, or the `[project] name` of a pyproject.toml (a
/// package.json's `name` is read by [`build_js`]).
fn package_name(manifest: &str) -> Option<String> {
    let doc: toml::Table = manifest.parse().ok()?;
    doc.get("package").or_else(|| doc.get("project"))?.get("name")?.as_str().map(str::to_string)
}

/// Builds a Python project (`app.py`, `warden_task.py`, `wit/`) with componentize-py into
/// `target/NAME.wasm` (from the sources staged in `target/py`).
fn build_python(dir: &Path) -> anyhow::Result<Built> {
    let manifest = dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", manifest.display())))?;
    let name = package_name(&text)
        .ok_or_else(|| Failure::new(exit::USAGE, format!("{} has no [project] name", manifest.display())))?;
    let tool = componentize_py()?;
    let target = dir.join("target");
    let stage = target.join("py");
    stage_sources(dir, &stage, &[".py"])?;
    let out = target.join(format!("{name}.wasm"));
    eprintln!("building {name} (componentize-py componentize app)");
    let status = Command::new(&tool)
        .current_dir(&stage)
        .arg("-d")
        .arg(dir.join("wit"))
        .args(["-w", "task", "componentize", "app", "-o"])
        .arg(&out)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot run {}: {e}", tool.display())))?;
    if !status.success() || !out.is_file() {
        return Err(Failure::new(1, format!("componentize-py could not build {name} (see above)")).into());
    }
    Ok(Built { path: out, name })
}

/// Warden's directory in the user's cache (`$XDG_CACHE_HOME` or `~/.cache`, then `warden/`),
/// where the Python and JavaScript toolchains are installed on first use.
fn cache_dir(tool: &str) -> Result<PathBuf, Failure> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("warden"))
        .ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                format!("no cache directory: set HOME or XDG_CACHE_HOME, or put {tool} on the PATH"),
            )
        })
}

/// componentize-py: on the PATH, or installed once into a virtual environment under the
/// user's cache directory ([`cache_dir`]).
fn componentize_py() -> anyhow::Result<PathBuf> {
    let on_path = Command::new("componentize-py").arg("--version").output().is_ok_and(|o| o.status.success());
    if on_path {
        return Ok(PathBuf::from("componentize-py"));
    }
    let venv = cache_dir("componentize-py")?.join(COMPONENTIZE_PY.replace("==", "-"));
    let tool = venv.join("bin").join("componentize-py");
    if tool.is_file() {
        return Ok(tool);
    }
    eprintln!("installing {COMPONENTIZE_PY} into {} (once; it builds Python tasks)", venv.display());
    let run = |cmd: &mut Command, what: &str| -> anyhow::Result<()> {
        let status = cmd.status().map_err(|e| Failure::new(exit::USAGE, format!("cannot run {what}: {e}")))?;
        if status.success() {
            return Ok(());
        }
        Err(Failure::new(
            1,
            format!(
                "{what} failed (see above); install componentize-py yourself (`pip install {COMPONENTIZE_PY}`) and put \
                 it on the PATH"
            ),
        )
        .into())
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
    run(Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", COMPONENTIZE_PY]), "pip install")?;
    Ok(tool)
}

/// Builds a JavaScript project (`app.js`, `warden_task.js`, `wit/`) with componentize-js into
/// `target/NAME.wasm` (from the sources staged in `target/js`). The helper `warden_task.js` is
/// the entry point: it imports `app.js`.
fn build_js(dir: &Path) -> anyhow::Result<Built> {
    let manifest = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", manifest.display())))?;
    let name = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .ok_or_else(|| Failure::new(exit::USAGE, format!("{} has no \"name\"", manifest.display())))?;
    if !dir.join("warden_task.js").is_file() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} has no warden_task.js, the entry point that exports the tasks of app.js: copy it from a project \
                 made by `warden new NAME --lang js`",
                dir.display()
            ),
        )
        .into());
    }
    let cli = componentize_js()?;
    let target = dir.join("target");
    let stage = target.join("js");
    stage_sources(dir, &stage, &[".js", ".mjs", ".json"])?;
    let out = target.join(format!("{name}.wasm"));
    eprintln!("building {name} (componentize-js warden_task.js)");
    let status = Command::new("node")
        .current_dir(&stage)
        .arg(&cli)
        .arg("warden_task.js")
        .arg("--wit")
        .arg(dir.join("wit"))
        .args(["--world-name", "task", "--disable", "http", "fetch-event", "-o"])
        .arg(&out)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot run node: {e}; install Node.js 18 or later")))?;
    if !status.success() || !out.is_file() {
        return Err(Failure::new(1, format!("componentize-js could not build {name} (see above)")).into());
    }
    Ok(Built { path: out, name })
}

/// Stages the sources of a Python or JavaScript project: the files under `dir` ending in one of
/// `exts`, links followed, copied into a fresh `stage` (leaving out `target/`, `node_modules/`,
/// `wit/` and hidden entries). componentize-py and componentize-js give the guest only the
/// directory they build in, so a link out of it (as `examples/python` and `examples/js` link
/// to the repository's helpers) would be unreadable there.
fn stage_sources(dir: &Path, stage: &Path, exts: &[&str]) -> Result<(), Failure> {
    let _ = std::fs::remove_dir_all(stage);
    copy_sources(dir, stage, exts)
}

fn copy_sources(from: &Path, to: &Path, exts: &[&str]) -> Result<(), Failure> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Failure::new(exit::USAGE, format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::create_dir_all(to).map_err(|e| io("create", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io("read", from, e))? {
        let path = entry.map_err(|e| io("read", from, e))?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if file.starts_with('.') || ["target", "node_modules", "wit", "__pycache__"].contains(&file) {
            continue;
        }
        if path.is_dir() {
            copy_sources(&path, &to.join(file), exts)?;
        } else if exts.iter().any(|ext| file.ends_with(ext)) {
            std::fs::copy(&path, to.join(file)).map_err(|e| io("copy", &path, e))?;
        }
    }
    Ok(())
}

/// componentize-js's CLI script, installed once with npm under the user's cache directory
/// ([`cache_dir`]). A lock file serialises concurrent first builds; a marker file written last
/// tells a complete install from a half one, which is redone.
fn componentize_js() -> anyhow::Result<PathBuf> {
    let home = cache_dir("componentize-js")?.join(COMPONENTIZE_JS_DIR);
    let cli = home.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    let marker = home.join(".installed");
    if marker.is_file() && cli.is_file() {
        return Ok(cli);
    }
    std::fs::create_dir_all(&home)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot create {}: {e}", home.display())))?;
    let lock = std::fs::File::create(home.join(".lock"))
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot create {}: {e}", home.join(".lock").display())))?;
    lock.lock().map_err(|e| Failure::new(exit::USAGE, format!("cannot lock {}: {e}", home.display())))?;
    if marker.is_file() && cli.is_file() {
        return Ok(cli); // another build installed it while this one waited
    }
    eprintln!(
        "installing {} into {} (once; it builds JavaScript tasks)",
        COMPONENTIZE_JS.join(" and "),
        home.display()
    );
    // A half install (no marker) starts over.
    let _ = std::fs::remove_dir_all(home.join("node_modules"));
    let status = Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel", "error", "--prefix"])
        .arg(&home)
        .args(COMPONENTIZE_JS)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot run npm: {e}; install Node.js 18 or later with npm")))?;
    if !status.success() || !cli.is_file() {
        return Err(Failure::new(
            1,
            format!(
                "npm install failed (see above); check the network and npm's registry, then run `warden build` again \
                 (it installs {})",
                COMPONENTIZE_JS.join(" and ")
            ),
        )
        .into());
    }
    std::fs::write(&marker, COMPONENTIZE_JS.join("\n"))
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot write {}: {e}", marker.display())))?;
    Ok(cli)
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
    fn staging_follows_links_and_leaves_out_build_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (project, elsewhere) = (dir.path().join("p"), dir.path().join("elsewhere"));
        for d in ["lib", "target/js", "node_modules/x", "wit", ".git"] {
            std::fs::create_dir_all(project.join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::fs::write(elsewhere.join("warden_task.js"), "// helper").expect("write");
        std::os::unix::fs::symlink(elsewhere.join("warden_task.js"), project.join("warden_task.js")).expect("link");
        for f in
            ["app.js", "lib/util.mjs", "data.json", "README.md", "target/js/old.js", "node_modules/x/i.js", "wit/a.js"]
        {
            std::fs::write(project.join(f), "x").expect("write");
        }
        let stage = project.join("target/js");
        stage_sources(&project, &stage, &[".js", ".mjs", ".json"]).expect("stage");
        let mut staged: Vec<String> = Vec::new();
        let mut dirs = vec![stage.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("read") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    staged.push(p.strip_prefix(&stage).expect("under").display().to_string());
                }
            }
        }
        staged.sort();
        assert_eq!(staged, ["app.js", "data.json", "lib/util.mjs", "warden_task.js"]);
        assert!(!stage.join("warden_task.js").is_symlink(), "a link is copied as its file");
        assert_eq!(std::fs::read_to_string(stage.join("warden_task.js")).expect("read"), "// helper");
    }

    #[test]
    fn a_js_project_names_its_task_and_carries_the_helper() {
        let files = js_files("word-count", "word_count");
        let names: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
        assert_eq!(names, ["app.js", "warden_task.js", "package.json", "README.md", ".gitignore", "wit/task.wit"]);
        let package: serde_json::Value = serde_json::from_str(&files[2].1).expect("package.json is JSON");
        assert_eq!(package["name"], "word-count");
        assert_eq!(package["type"], "module");
        assert!(files[0].1.contains("  word_count: {"), "{}", files[0].1);
        assert!(files[1].1.contains("export const handler"));
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
