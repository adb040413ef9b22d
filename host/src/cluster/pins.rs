//! Pinning (JobSync): a task's pins are ordered SQL `LIKE` patterns (`%` any run of
//! characters, `_` one character, case-sensitive, matching the whole text) over node names and
//! labels. The first pattern that matches a live node decides which nodes may run the task;
//! a task whose patterns match no live node can run nowhere and is reported, not silently
//! stuck. Pure functions: the services tick feeds them the live nodes and the tasks.

/// SQL `LIKE` without an escape character: `%` matches any run of characters (also none),
/// `_` exactly one; everything else matches itself, case-sensitively; the whole text must match.
pub fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Greedy matching with backtracking to the last `%` (linear in practice, no recursion).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '_' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

/// A live node as pinning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinNode<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a [String],
}

impl PinNode<'_> {
    /// Whether `pattern` matches the node's name or one of its labels.
    pub fn matches(&self, pattern: &str) -> bool {
        like(pattern, self.name) || self.labels.iter().any(|l| like(pattern, l))
    }
}

/// The nodes that may run a task with these pins: `None` when it has no pins (any node);
/// otherwise the live nodes matching the first pattern that matches any, which is empty when
/// no pattern matches a live node (the task can run nowhere).
pub fn eligible<'a>(patterns: &[String], live: &[PinNode<'a>]) -> Option<Vec<&'a str>> {
    if patterns.is_empty() {
        return None;
    }
    for p in patterns {
        let hits: Vec<&'a str> = live.iter().filter(|n| n.matches(p)).map(|n| n.name).collect();
        if !hits.is_empty() {
            return Some(hits);
        }
    }
    Some(Vec::new())
}

/// The tasks node `me` must not claim: pinned tasks it is not eligible for. `tasks` are
/// (name, pins).
pub fn excluded_for(me: &str, tasks: &[(String, Vec<String>)], live: &[PinNode<'_>]) -> Vec<String> {
    tasks
        .iter()
        .filter(|(_, pins)| eligible(pins, live).is_some_and(|nodes| !nodes.contains(&me)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The pinned tasks `me` may run (it is among the eligible nodes): it claims them whatever
/// their token.
pub fn pinned_to(me: &str, tasks: &[(String, Vec<String>)], live: &[PinNode<'_>]) -> Vec<String> {
    tasks
        .iter()
        .filter(|(_, pins)| eligible(pins, live).is_some_and(|nodes| nodes.contains(&me)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Checks a pin request: 1-64 patterns of 1-256 characters.
pub fn validate(patterns: &[String]) -> Result<(), String> {
    if patterns.is_empty() || patterns.len() > 64 {
        return Err(format!("give 1 to 64 patterns, got {}", patterns.len()));
    }
    if let Some(bad) = patterns.iter().find(|p| p.is_empty() || p.chars().count() > 256) {
        return Err(format!("pattern `{bad}` must be 1-256 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_follows_sql() {
        for (p, t, want) in [
            ("gpu-%", "gpu-1", true),
            ("gpu-%", "gpu-", true),
            ("gpu-%", "cpu-1", false),
            ("gpu-_", "gpu-12", false),
            ("gpu-__", "gpu-12", true),
            ("%", "", true),
            ("", "", true),
            ("", "a", false),
            ("GPU-%", "gpu-1", false),
            ("%eu%", "region=eu-west", true),
            ("a%b%c", "axxbyyc", true),
            ("a%b%c", "axxbyy", false),
            ("%a", "bbba", true),
            ("%a", "bbab", false),
            ("region=eu", "region=eu", true),
            ("region=eu", "region=eu2", false),
        ] {
            assert_eq!(like(p, t), want, "{p} LIKE {t}");
        }
    }

    fn nodes<'a>(spec: &'a [(&'a str, Vec<String>)]) -> Vec<PinNode<'a>> {
        spec.iter().map(|(n, l)| PinNode { name: n, labels: l }).collect()
    }

    #[test]
    fn the_first_pattern_with_a_live_match_decides() {
        let spec = [
            ("gpu-2", vec!["gpu".to_string(), "region=eu".to_string()]),
            ("cpu-1", vec!["region=us".to_string()]),
            ("cpu-2", vec!["region=eu".to_string()]),
        ];
        let live = nodes(&spec);
        let pins = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(eligible(&[], &live), None);
        assert_eq!(eligible(&pins(&["gpu-primary", "gpu-%"]), &live), Some(vec!["gpu-2"]));
        assert_eq!(eligible(&pins(&["region=eu"]), &live), Some(vec!["gpu-2", "cpu-2"]));
        assert_eq!(eligible(&pins(&["tpu%"]), &live), Some(vec![]), "no live match: nowhere");
        assert_eq!(eligible(&pins(&["cpu-1", "gpu"]), &live), Some(vec!["cpu-1"]), "order matters");
        let tasks = vec![
            ("render".to_string(), pins(&["gpu-primary", "gpu-%"])),
            ("free".to_string(), vec![]),
            ("eu".to_string(), pins(&["region=eu"])),
        ];
        assert_eq!(excluded_for("cpu-1", &tasks, &live), vec!["render", "eu"]);
        assert_eq!(excluded_for("gpu-2", &tasks, &live), Vec::<String>::new());
        assert_eq!(excluded_for("cpu-2", &tasks, &live), vec!["render"]);
        assert_eq!(pinned_to("cpu-2", &tasks, &live), vec!["eu"]);
        assert_eq!(pinned_to("gpu-2", &tasks, &live), vec!["render", "eu"]);
    }

    #[test]
    fn validation() {
        assert!(validate(&[]).is_err());
        assert!(validate(&[String::new()]).is_err());
        assert!(validate(&["gpu-%".into()]).is_ok());
    }
}
