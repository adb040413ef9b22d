//! The layering rule of the crate, enforced: every top-level module sits on a floor, and a
//! module may import only from floors below its own (ARCHITECTURE.md, "The floors"). The test
//! reads `host/src` and fails on any `crate::…` path that names a module on the same floor or
//! higher, so an upward arrow (and with it every import cycle between modules) cannot land.

/// The floors, bottom up. A module imports only from lower floors.
pub(crate) const FLOORS: &[&[&str]] = &[
    // The domain: types and pure rules that two layers share.
    &["model"],
    // Settings and the data directory's lock.
    &["config", "data_dir"],
    // The walls: SQL, wasmtime, OpenTelemetry.
    &["store", "runtime", "telemetry"],
    // Membership, the leader and the ring.
    &["cluster"],
    // Routing, the status machine in motion, running attempts.
    &["orchestrator"],
    // The loops and the surface around the orchestrator.
    &["services", "api"],
    // The composition root.
    &["server"],
    // The program.
    &["cli"],
];

#[cfg(test)]
mod tests {
    use super::FLOORS;
    use std::path::{Path, PathBuf};

    fn floor_of(module: &str) -> Option<usize> {
        FLOORS.iter().position(|f| f.contains(&module))
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read host/src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level module a source file belongs to (`store/engine.rs` → `store`).
    fn module_of(root: &Path, file: &Path) -> String {
        let rel = file.strip_prefix(root).expect("under src");
        let first = rel.components().next().expect("a component").as_os_str().to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    }

    /// Every `crate::name` path in `text`, with its line number (comments included: a doc
    /// link upwards is as misleading as an import).
    fn crate_paths(text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                let tail = &rest[i + "crate::".len()..];
                let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                // `$crate::` in macros and `warden_crate::`-like names are not ours.
                let before = &rest[..i];
                if !before.ends_with('$') && !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    out.push((n + 1, name));
                }
                rest = tail;
            }
        }
        out
    }

    #[test]
    fn no_module_imports_from_its_own_floor_or_above() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        files.sort();
        let mut wrong = Vec::new();
        let mut unplaced = Vec::new();
        for file in &files {
            let module = module_of(&root, file);
            if matches!(module.as_str(), "lib" | "main" | "layering") {
                continue;
            }
            let Some(floor) = floor_of(&module) else {
                unplaced.push(module);
                continue;
            };
            let text = std::fs::read_to_string(file).expect("read source");
            for (line, target) in crate_paths(&text) {
                if target == module || target.is_empty() {
                    continue;
                }
                match floor_of(&target) {
                    Some(t) if t < floor => {}
                    Some(t) => wrong.push(format!(
                        "{}:{line}: `{module}` (floor {floor}) uses `crate::{target}` (floor {t})",
                        file.strip_prefix(&root).expect("under src").display()
                    )),
                    None => unplaced.push(target),
                }
            }
        }
        unplaced.sort();
        unplaced.dedup();
        assert!(unplaced.is_empty(), "modules with no floor in layering::FLOORS: {unplaced:?}");
        assert!(wrong.is_empty(), "imports from the same floor or above:\n{}", wrong.join("\n"));
    }

    #[test]
    fn the_rule_finds_an_upward_path() {
        let found = crate_paths("use crate::orchestrator::Orchestrator; // see crate::model\nmacro: $crate::x");
        assert_eq!(found, vec![(1, "orchestrator".to_string()), (1, "model".to_string())]);
        assert!(floor_of("orchestrator") > floor_of("store"));
    }

    #[test]
    fn every_top_level_module_has_a_floor() {
        let lib = include_str!("lib.rs");
        for line in lib.lines() {
            let Some(rest) = line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("pub(crate) mod ")) else {
                continue;
            };
            let name = rest.trim_end_matches(';');
            if name != "layering" {
                assert!(floor_of(name).is_some(), "`{name}` is missing from layering::FLOORS");
            }
        }
    }
}
