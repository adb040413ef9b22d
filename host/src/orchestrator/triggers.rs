//! pynenc's triggers, evaluated as a pure function: given a trigger, what happened since the
//! last evaluation (events, status changes, the cron window) and the trigger's saved state, it
//! says which runs fire, with their run keys and arguments. The atomic service
//! (`services/`) feeds it from the store and routes each firing with the idempotency key
//! `trigger:<id>:<run key>`, so a run fires once however often it is evaluated.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::model::{ArgsFrom, Event, InvocationStatus, Millis, StatusChange, Trigger, TriggerCondition};

/// Why a trigger definition is refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTrigger(pub String);

/// Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
/// a leading seconds field; UTC.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, BadTrigger> {
    let fields = expr.split_whitespace().count();
    if !(fields == 5 || fields == 6) {
        return Err(BadTrigger(format!(
            "cron `{expr}` has {fields} fields; expected 5 (minute hour day-of-month month day-of-week) \
             or 6 (seconds first)"
        )));
    }
    croner::parser::CronParser::new().parse(expr).map_err(|e| BadTrigger(format!("cron `{expr}`: {e}")))
}

/// Refuses a cron expression that matches no date (`0 0 30 2 *`, `0 0 31 4 *`): it would
/// never fire, and every evaluation would search the calendar for it in vain. The Gregorian
/// calendar (dates and weekdays) repeats every 400 years, so an expression that fires at all
/// fires within any 400 years: the search covers the last 410 before croner's limit (the
/// year 5000), not the 3,000 from now.
fn check_fires(expr: &str, cron: &croner::Cron) -> Result<(), BadTrigger> {
    let from = chrono::NaiveDate::from_ymd_opt(croner::YEAR_UPPER_LIMIT - 410, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    match cron.find_next_occurrence(&from, false) {
        Ok(_) => Ok(()),
        Err(_) => Err(BadTrigger(format!(
            "cron `{expr}` never fires: no date matches it (check the day of the month against the month)"
        ))),
    }
}

/// Checks a condition: cron expressions parse (and fire at some time), composites are not empty, status lists are not.
pub fn validate(cond: &TriggerCondition, args_from: ArgsFrom) -> Result<(), BadTrigger> {
    fn walk(c: &TriggerCondition, kinds: &mut BTreeSet<&'static str>) -> Result<(), BadTrigger> {
        match c {
            TriggerCondition::Cron(e) => {
                check_fires(e, &parse_cron(e)?)?;
                kinds.insert("cron");
            }
            TriggerCondition::Status(s) => {
                if s.statuses.is_empty() {
                    return Err(BadTrigger(format!("status condition on `{}` lists no statuses", s.task)));
                }
                kinds.insert("status");
            }
            TriggerCondition::Result(_) => {
                kinds.insert("result");
            }
            TriggerCondition::Failure(_) => {
                kinds.insert("failure");
            }
            TriggerCondition::Event(code) => {
                if code.is_empty() {
                    return Err(BadTrigger("event condition with an empty code".into()));
                }
                kinds.insert("event");
            }
            TriggerCondition::Any(cs) | TriggerCondition::All(cs) => {
                if cs.is_empty() {
                    return Err(BadTrigger("`any`/`all` needs at least one condition".into()));
                }
                for c in cs {
                    walk(c, kinds)?;
                }
            }
        }
        Ok(())
    }
    let mut kinds = BTreeSet::new();
    walk(cond, &mut kinds)?;
    let needs: &[&str] = match args_from {
        ArgsFrom::Static => &[],
        ArgsFrom::Event => &["event"],
        ArgsFrom::Result => &["status", "result"],
        ArgsFrom::Status => &["status", "result", "failure"],
    };
    if !needs.is_empty() && !needs.iter().any(|k| kinds.contains(k)) {
        return Err(BadTrigger(format!(
            "args_from `{}` needs a condition of kind {}",
            args_from.as_str(),
            needs.join(" or ")
        )));
    }
    Ok(())
}

/// The tasks a condition watches (status, result and failure leaves).
pub fn watched_tasks(cond: &TriggerCondition, out: &mut BTreeSet<String>) {
    match cond {
        TriggerCondition::Status(s) => {
            out.insert(s.task.clone());
        }
        TriggerCondition::Result(r) => {
            out.insert(r.task.clone());
        }
        TriggerCondition::Failure(f) => {
            out.insert(f.task.clone());
        }
        TriggerCondition::Any(cs) | TriggerCondition::All(cs) => cs.iter().for_each(|c| watched_tasks(c, out)),
        TriggerCondition::Cron(_) | TriggerCondition::Event(_) => {}
    }
}

/// What happened since the last evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// New events, in order.
    pub events: &'a [Event],
    /// New status changes of watched tasks, in order.
    pub changes: &'a [StatusChange],
    /// Database now: the cron window of a trigger ends here.
    pub now: Millis,
}

/// One firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// Unique per trigger: what fired it.
    pub run_key: String,
    /// The arguments of the call.
    pub args: Value,
}

/// What fired a leaf.
#[derive(Debug, Clone, PartialEq)]
struct Match {
    key: String,
    context: Value,
}

/// The state key of the cron window's start.
const CRON_CHECKED: &str = "cron_checked";
/// The state key of an `all` composite's satisfied children.
const SEEN: &str = "seen";

/// Evaluates one trigger. Returns the firings and the new state (unchanged if nothing moved).
/// Facts older than the trigger are ignored; a cron window starts at the trigger's creation
/// and fires at most once per evaluation (the latest matching time: a node that was down for
/// an hour does not fire sixty times).
pub fn evaluate(trigger: &Trigger, facts: &Facts<'_>) -> (Vec<Fire>, Value) {
    let mut state = match &trigger.state {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let cron_from = state.get(CRON_CHECKED).and_then(Value::as_i64).unwrap_or(trigger.created_at);
    let mut seen = match state.remove(SEEN) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let ctx = Ctx { trigger, facts, cron_from };
    let matches = ctx.matches(&trigger.on, "r", &mut seen);
    if has_cron(&trigger.on) {
        state.insert(CRON_CHECKED.into(), json!(facts.now.max(cron_from)));
    }
    if !seen.is_empty() {
        state.insert(SEEN.into(), Value::Object(seen));
    }
    let fires = matches.into_iter().map(|m| Fire { args: args_for(trigger, &m.context), run_key: m.key }).collect();
    (fires, Value::Object(state))
}

fn has_cron(c: &TriggerCondition) -> bool {
    match c {
        TriggerCondition::Cron(_) => true,
        TriggerCondition::Any(cs) | TriggerCondition::All(cs) => cs.iter().any(has_cron),
        _ => false,
    }
}

struct Ctx<'a> {
    trigger: &'a Trigger,
    facts: &'a Facts<'a>,
    cron_from: Millis,
}

impl Ctx<'_> {
    fn matches(&self, cond: &TriggerCondition, path: &str, seen: &mut Map<String, Value>) -> Vec<Match> {
        let since = self.trigger.created_at;
        let changes = || self.facts.changes.iter().filter(move |c| c.at >= since);
        match cond {
            TriggerCondition::Cron(expr) => self.cron(expr).into_iter().collect(),
            TriggerCondition::Event(code) => self
                .facts
                .events
                .iter()
                .filter(|e| &e.code == code && e.at >= since)
                .map(|e| Match {
                    key: format!("event:{}", e.seq),
                    context: json!({"kind": "event", "code": e.code, "payload": e.payload}),
                })
                .collect(),
            TriggerCondition::Status(s) => {
                changes().filter(|c| c.task == s.task && s.statuses.contains(&c.status)).map(change_match).collect()
            }
            TriggerCondition::Result(r) => changes()
                .filter(|c| c.task == r.task && c.status == InvocationStatus::Success)
                .filter(|c| r.equals.as_ref().is_none_or(|want| c.result.as_ref() == Some(want)))
                .map(change_match)
                .collect(),
            TriggerCondition::Failure(f) => changes()
                .filter(|c| c.task == f.task && c.status == InvocationStatus::Failed)
                .filter(|c| f.kinds.is_empty() || c.error.as_ref().is_some_and(|e| f.kinds.contains(&e.kind)))
                .map(change_match)
                .collect(),
            TriggerCondition::Any(cs) => {
                cs.iter().enumerate().flat_map(|(i, c)| self.matches(c, &format!("{path}.{i}"), seen)).collect()
            }
            TriggerCondition::All(cs) => {
                for (i, c) in cs.iter().enumerate() {
                    let child = format!("{path}.{i}");
                    if let Some(last) = self.matches(c, &child, seen).pop() {
                        seen.insert(child, json!({"key": last.key, "context": last.context}));
                    }
                }
                let children: Vec<String> = (0..cs.len()).map(|i| format!("{path}.{i}")).collect();
                if !children.iter().all(|c| seen.contains_key(c)) {
                    return Vec::new();
                }
                let parts: Vec<Value> = children.iter().filter_map(|c| seen.remove(c)).collect();
                let key = parts.iter().filter_map(|p| p.get("key").and_then(Value::as_str)).collect::<Vec<_>>();
                let context = parts.last().and_then(|p| p.get("context")).cloned().unwrap_or(Value::Null);
                vec![Match { key: format!("all[{}]", key.join(",")), context }]
            }
        }
    }

    /// The latest time of `expr` in `(cron_from, now]`, if any.
    fn cron(&self, expr: &str) -> Option<Match> {
        let cron = parse_cron(expr).ok()?;
        let now = DateTime::<Utc>::from_timestamp_millis(self.facts.now)?;
        let at = cron.find_previous_occurrence(&now, true).ok()?;
        let ms = at.timestamp_millis();
        (ms > self.cron_from && ms <= self.facts.now)
            .then(|| Match { key: format!("cron:{ms}"), context: json!({"kind": "cron", "scheduled_at": ms}) })
    }
}

fn change_match(c: &StatusChange) -> Match {
    Match {
        key: format!("history:{}", c.seq),
        context: json!({
            "kind": "status",
            "invocation": c.invocation,
            "task": c.task,
            "status": c.status,
            "result": c.result,
            "error": c.error,
        }),
    }
}

/// The arguments of a firing: static ones, or taken from what fired it. When the firing
/// context has no such part (an `any` of an event and a cron, say), the static arguments.
fn args_for(trigger: &Trigger, context: &Value) -> Value {
    let fixed = || trigger.args.clone().unwrap_or_else(|| json!({}));
    let kind = context.get("kind").and_then(Value::as_str);
    match (trigger.args_from, kind) {
        (ArgsFrom::Event, Some("event")) => context.get("payload").cloned().unwrap_or_else(fixed),
        (ArgsFrom::Result, Some("status")) => match context.get("result") {
            Some(v) if !v.is_null() => v.clone(),
            _ => fixed(),
        },
        (ArgsFrom::Status, Some("status")) => {
            let mut m = context.as_object().cloned().unwrap_or_default();
            m.remove("kind");
            Value::Object(m)
        }
        _ => fixed(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{ErrorKind, FailureCondition, ResultCondition, StatusCondition, TaskFailure};

    fn trigger(on: TriggerCondition, args_from: ArgsFrom) -> Trigger {
        Trigger {
            id: "t".into(),
            task: "hello".into(),
            args: Some(json!({"name": "static"})),
            args_from,
            on,
            state: json!({}),
            created_at: 1_000,
        }
    }

    fn event(seq: i64, code: &str, at: Millis) -> Event {
        Event { seq, code: code.into(), payload: json!({"name": format!("ev{seq}")}), at }
    }

    fn change(seq: i64, task: &str, status: InvocationStatus, at: Millis) -> StatusChange {
        let error = (status == InvocationStatus::Failed).then(|| TaskFailure::new(ErrorKind::Fatal, "boom"));
        let result = (status == InvocationStatus::Success).then(|| json!({"name": format!("r{seq}")}));
        StatusChange { seq, invocation: format!("i{seq}"), task: task.into(), status, result, error, at }
    }

    fn facts<'a>(events: &'a [Event], changes: &'a [StatusChange], now: Millis) -> Facts<'a> {
        Facts { events, changes, now }
    }

    #[test]
    fn an_event_fires_once_per_event_with_its_payload() {
        let t = trigger(TriggerCondition::Event("deploy".into()), ArgsFrom::Event);
        let evs = [event(1, "deploy", 2_000), event(2, "other", 2_000), event(3, "deploy", 2_000)];
        let (fires, _) = evaluate(&t, &facts(&evs, &[], 3_000));
        assert_eq!(fires.len(), 2);
        assert_eq!(fires[0], Fire { run_key: "event:1".into(), args: json!({"name": "ev1"}) });
        assert_eq!(fires[1].run_key, "event:3");
    }

    #[test]
    fn facts_older_than_the_trigger_are_ignored() {
        let t = trigger(TriggerCondition::Event("deploy".into()), ArgsFrom::Static);
        let (fires, _) = evaluate(&t, &facts(&[event(1, "deploy", 999)], &[], 3_000));
        assert!(fires.is_empty());
    }

    #[test]
    fn status_result_and_failure_conditions_match_their_changes() {
        let changes = [
            change(10, "square", InvocationStatus::Running, 2_000),
            change(11, "square", InvocationStatus::Success, 2_000),
            change(12, "other", InvocationStatus::Success, 2_000),
            change(13, "square", InvocationStatus::Failed, 2_000),
        ];
        let status = StatusCondition { task: "square".into(), statuses: vec![InvocationStatus::Success] };
        let (fires, _) =
            evaluate(&trigger(TriggerCondition::Status(status), ArgsFrom::Result), &facts(&[], &changes, 3_000));
        assert_eq!(fires, vec![Fire { run_key: "history:11".into(), args: json!({"name": "r11"}) }]);

        let result = ResultCondition { task: "square".into(), equals: Some(json!({"name": "nope"})) };
        let (fires, _) =
            evaluate(&trigger(TriggerCondition::Result(result), ArgsFrom::Static), &facts(&[], &changes, 3_000));
        assert!(fires.is_empty(), "equals filters results");

        let failure = FailureCondition { task: "square".into(), kinds: vec![ErrorKind::Fatal] };
        let (fires, _) =
            evaluate(&trigger(TriggerCondition::Failure(failure), ArgsFrom::Status), &facts(&[], &changes, 3_000));
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].args["invocation"], "i13");
        assert_eq!(fires[0].args["error"]["kind"], "fatal");
        let failure = FailureCondition { task: "square".into(), kinds: vec![ErrorKind::Timeout] };
        let (fires, _) =
            evaluate(&trigger(TriggerCondition::Failure(failure), ArgsFrom::Status), &facts(&[], &changes, 3_000));
        assert!(fires.is_empty(), "kinds filter failures");
    }

    #[test]
    fn cron_fires_the_latest_due_time_once_and_remembers_its_window() {
        // Every minute; created at 1 s, evaluated at 150 s: due at 60 s and 120 s, fires 120 s once.
        let t = trigger(TriggerCondition::Cron("* * * * *".into()), ArgsFrom::Static);
        let (fires, state) = evaluate(&t, &facts(&[], &[], 150_000));
        assert_eq!(fires, vec![Fire { run_key: "cron:120000".into(), args: json!({"name": "static"}) }]);
        assert_eq!(state[CRON_CHECKED], 150_000);
        let again = Trigger { state, ..t.clone() };
        let (fires, state) = evaluate(&again, &facts(&[], &[], 170_000));
        assert!(fires.is_empty(), "nothing due in (150 s, 170 s]");
        let later = Trigger { state, ..t };
        let (fires, _) = evaluate(&later, &facts(&[], &[], 180_000));
        assert_eq!(fires[0].run_key, "cron:180000");
    }

    #[test]
    fn cron_that_never_fires_is_refused() {
        let started = std::time::Instant::now();
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 31 2 *"] {
            let e = validate(&TriggerCondition::Cron(never.into()), ArgsFrom::Static).expect_err(never);
            assert!(e.0.contains("never fires"), "{never}: {e}");
        }
        for fires in ["0 0 29 2 *", "* * * * *", "0 12 * * MON", "0 0 31 * *"] {
            assert_eq!(validate(&TriggerCondition::Cron(fires.into()), ArgsFrom::Static), Ok(()), "{fires}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn cron_with_seconds_and_bad_expressions() {
        let t = trigger(TriggerCondition::Cron("*/10 * * * * *".into()), ArgsFrom::Static);
        let (fires, _) = evaluate(&t, &facts(&[], &[], 25_000));
        assert_eq!(fires[0].run_key, "cron:20000");
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("0 0 * * * * 2030").is_err(), "years are not cron's 5 fields");
    }

    #[test]
    fn any_fires_for_each_child_and_all_waits_for_every_child() {
        let any = TriggerCondition::Any(vec![TriggerCondition::Event("a".into()), TriggerCondition::Event("b".into())]);
        let evs = [event(1, "a", 2_000), event(2, "b", 2_000)];
        let (fires, _) = evaluate(&trigger(any, ArgsFrom::Static), &facts(&evs, &[], 3_000));
        assert_eq!(fires.len(), 2);

        let all = trigger(
            TriggerCondition::All(vec![TriggerCondition::Event("a".into()), TriggerCondition::Event("b".into())]),
            ArgsFrom::Event,
        );
        let (fires, state) = evaluate(&all, &facts(&[event(1, "a", 2_000)], &[], 3_000));
        assert!(fires.is_empty(), "only `a` so far");
        assert!(state[SEEN].get("r.0").is_some());
        let all = Trigger { state, ..all };
        let (fires, state) = evaluate(&all, &facts(&[event(2, "b", 2_000)], &[], 4_000));
        assert_eq!(fires, vec![Fire { run_key: "all[event:1,event:2]".into(), args: json!({"name": "ev2"}) }]);
        assert!(state.get(SEEN).is_none(), "an `all` starts over after firing");
    }

    #[test]
    fn validation_names_the_problem() {
        let bad = TriggerCondition::Any(vec![]);
        assert!(validate(&bad, ArgsFrom::Static).unwrap_err().0.contains("at least one"));
        let cron = TriggerCondition::Cron("* * * * *".into());
        assert!(validate(&cron, ArgsFrom::Event).unwrap_err().0.contains("event"));
        assert!(validate(&cron, ArgsFrom::Static).is_ok());
        let mut tasks = BTreeSet::new();
        let both = TriggerCondition::All(vec![
            TriggerCondition::Status(StatusCondition { task: "a".into(), statuses: vec![InvocationStatus::Failed] }),
            TriggerCondition::Result(ResultCondition { task: "b".into(), equals: None }),
        ]);
        watched_tasks(&both, &mut tasks);
        assert_eq!(tasks.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
