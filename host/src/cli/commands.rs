//! The client commands of the daily loop, each one request or a few against a running daemon:
//! deploy and remove components, call, wait, look (get, ls, history, logs), cancel and rerun.
//! Each prints for people or, with `-o json`, the daemon's JSON.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::Failure;
use super::client::Client;
use super::output::{self, Format, emit, exit};

/// `warden deploy FILE [--name N]`.
pub async fn deploy(c: &Client, fmt: Format, file: &Path, name: Option<String>) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", file.display())))?;
    let name = match name {
        Some(n) => n,
        None => file.file_stem().and_then(|s| s.to_str()).map(str::to_string).ok_or_else(|| {
            Failure::new(exit::USAGE, "cannot derive a component name from the file name; pass --name")
        })?,
    };
    let v = c.deploy(&name, bytes).await?;
    match fmt {
        Format::Json => emit(&output::json(&v)),
        Format::Text => {
            let tasks: Vec<String> =
                v["tasks"].as_array().into_iter().flatten().map(|t| output::text(&t["name"])).collect();
            emit(&format!(
                "deployed component {} version {} ({} bytes, digest {}): tasks {}\n",
                output::text(&v["name"]),
                output::text(&v["version"]),
                output::text(&v["size_bytes"]),
                output::brief(&v["digest"], 16),
                tasks.join(", ")
            ));
        }
    }
    Ok(())
}

/// `warden rm COMPONENT`.
pub async fn rm(c: &Client, fmt: Format, component: &str) -> anyhow::Result<()> {
    c.delete(&format!("/v1/components/{component}")).await?;
    match fmt {
        Format::Json => emit(&output::json(&json!({"removed": component}))),
        Format::Text => emit(&format!("removed component {component}\n")),
    }
    Ok(())
}

/// `warden versions COMPONENT`.
pub async fn versions(c: &Client, fmt: Format, component: &str) -> anyhow::Result<()> {
    let v = c.get(&format!("/v1/components/{component}/versions")).await?;
    if fmt == Format::Json {
        emit(&output::json(&v));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                output::text(&r["version"]),
                if r["current"] == true { "current".to_string() } else { String::new() },
                output::brief(&r["digest"], 16),
                output::text(&r["size_bytes"]),
                r["uploaded_at"].as_i64().map(output::time).unwrap_or_default(),
                output::text(&r["unfinished"]),
            ]
        })
        .collect();
    emit(&output::table(&["VERSION", "", "DIGEST", "BYTES", "UPLOADED", "UNFINISHED"], &rows));
    Ok(())
}

/// `warden rollback COMPONENT [--to N]`.
pub async fn rollback(c: &Client, fmt: Format, component: &str, to: Option<u64>) -> anyhow::Result<()> {
    let query = to.map(|n| format!("?version={n}")).unwrap_or_default();
    let v = c.post(&format!("/v1/components/{component}/rollback{query}"), &json!({})).await?;
    match fmt {
        Format::Json => emit(&output::json(&v)),
        Format::Text => emit(&format!(
            "component {component} runs version {} again (digest {})\n",
            output::text(&v["version"]),
            output::brief(&v["digest"], 16)
        )),
    }
    Ok(())
}

/// Parses the JSON arguments of a call (`{}` when absent).
pub fn parse_args(args: Option<&str>) -> anyhow::Result<Value> {
    match args {
        Some(a) => serde_json::from_str(a).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("the arguments are not valid JSON ({e}): {a}; e.g. '{{\"name\":\"Ada\"}}'"),
            )
            .into()
        }),
        None => Ok(Value::Object(Default::default())),
    }
}

/// `warden call TASK [ARGS] [--wait]`. Without `--wait` prints the routed invocation; with it,
/// says the id at once (on stderr), follows its status changes on the event stream (printed on
/// stderr), prints the final invocation and exits with
/// [`exit::NOT_SUCCESS`] unless it succeeded. Ctrl-C leaves the call running.
pub async fn call(
    c: &Client,
    fmt: Format,
    task: &str,
    args: &Value,
    options: &Value,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let routed = c.call_with(task, args, options).await?;
    let id = output::text(&routed["id"]);
    if !wait {
        match fmt {
            Format::Json => emit(&output::json(&routed)),
            Format::Text => {
                let reused = if routed["reused"] == true { " (an existing invocation answers it)" } else { "" };
                emit(&format!("{id}  {}{reused}\n", output::status(&output::text(&routed["status"]))));
            }
        }
        return Ok(());
    }
    if fmt == Format::Text {
        eprintln!("routed {task} as {id}; following it (Ctrl-C leaves the call running)");
    }
    let outcome = super::stream::follow_call(c, fmt, &id, timeout);
    let results = until_interrupted(std::slice::from_ref(&id), outcome).await?;
    finish(fmt, &[results], timeout)
}

/// `warden wait ID…`: waits for every invocation (at most `timeout`), prints each as it ends
/// up, and exits with [`exit::NOT_SUCCESS`] unless all succeeded.
pub async fn wait(c: &Client, fmt: Format, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
    let all = futures::future::try_join_all(ids.iter().map(|id| c.result(id, timeout)));
    let invocations = until_interrupted(ids, all).await?;
    finish(fmt, &invocations, timeout)
}

/// Runs `fut` unless Ctrl-C comes first; then says how to follow the calls and exits with
/// [`exit::INTERRUPTED`] (the calls keep running on the daemon).
async fn until_interrupted<T>(ids: &[String], fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => {
            Err(Failure::new(
                exit::INTERRUPTED,
                format!("stopped waiting; the call keeps running: follow it with `warden wait {}`", ids.join(" ")),
            )
            .into())
        }
    }
}

/// Prints waited invocations and turns "not all succeeded" into the exit code.
fn finish(fmt: Format, invocations: &[Value], timeout: Duration) -> anyhow::Result<()> {
    match (fmt, invocations) {
        (Format::Json, [one]) => emit(&output::json(one)),
        (Format::Json, many) => emit(&output::json(&json!({ "invocations": many }))),
        (Format::Text, [one]) => emit(&output::invocation(one)),
        (Format::Text, many) => {
            let rows: Vec<Vec<String>> = many
                .iter()
                .map(|v| {
                    let outcome =
                        if v["error"].is_null() { output::brief(&v["result"], 60) } else { error_line(&v["error"]) };
                    vec![
                        output::text(&v["id"]),
                        output::text(&v["task"]),
                        output::status(&output::text(&v["status"])),
                        outcome,
                    ]
                })
                .collect();
            emit(&output::table(&["ID", "TASK", "STATUS", "RESULT / ERROR"], &rows));
        }
    }
    let is_final = |v: &Value| {
        matches!(v["status"].as_str(), Some("success" | "failed" | "cancelled" | "concurrency_controlled_final"))
    };
    let not_ok: Vec<String> = invocations
        .iter()
        .filter(|v| v["status"] != "success")
        .map(|v| {
            let how = if is_final(v) { "ended" } else { "is still" };
            format!("{} {how} {}", output::text(&v["id"]), output::text(&v["status"]))
        })
        .collect();
    if not_ok.is_empty() {
        return Ok(());
    }
    let still = invocations.iter().any(|v| !is_final(v));
    let hint =
        if still { format!(" (waited {} s; `warden wait` waits again)", timeout.as_secs()) } else { String::new() };
    Err(Failure::new(exit::NOT_SUCCESS, format!("{}{hint}", not_ok.join(", "))).into())
}

fn error_line(e: &Value) -> String {
    output::brief(&json!(format!("{}: {}", output::text(&e["kind"]), output::text(&e["message"]))), 80)
}

/// `warden get ID`.
pub async fn get(c: &Client, fmt: Format, id: &str) -> anyhow::Result<()> {
    let v = c.get(&format!("/v1/invocations/{id}")).await?;
    emit(&match fmt {
        Format::Json => output::json(&v),
        Format::Text => output::invocation(&v),
    });
    Ok(())
}

/// `warden cancel ID` and `warden rerun ID` (`action`): the invocation as it is after.
pub async fn act(c: &Client, fmt: Format, id: &str, action: &str) -> anyhow::Result<()> {
    let v = c.post(&format!("/v1/invocations/{id}/{action}"), &json!({})).await?;
    match fmt {
        Format::Json => emit(&output::json(&v)),
        Format::Text if action == "rerun" => emit(&format!(
            "rerun of {id}: {}  {}\n",
            output::text(&v["id"]),
            output::status(&output::text(&v["status"]))
        )),
        Format::Text => emit(&output::invocation(&v)),
    }
    Ok(())
}

/// `warden history ID`: every status the invocation entered, with the time since the one before.
pub async fn history(c: &Client, fmt: Format, id: &str) -> anyhow::Result<()> {
    let v = c.get(&format!("/v1/invocations/{id}/history")).await?;
    if fmt == Format::Json {
        emit(&output::json(&v));
        return Ok(());
    }
    let mut prev: Option<i64> = None;
    let rows: Vec<Vec<String>> = v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let at = h["at"].as_i64().unwrap_or_default();
            let after = prev.map(|p| format!("+{}", output::duration(at - p))).unwrap_or_default();
            prev = Some(at);
            vec![
                output::time(at),
                after,
                output::status(&output::text(&h["status"])),
                output::text(&h["attempt"]),
                output::text(&h["node"]),
            ]
        })
        .collect();
    emit(&output::table(&["AT", "AFTER", "STATUS", "ATTEMPT", "NODE"], &rows));
    Ok(())
}

/// `warden logs ID`: per attempt, the guest's log lines, stdout and stderr.
pub async fn logs(c: &Client, fmt: Format, id: &str) -> anyhow::Result<()> {
    let v = c.get(&format!("/v1/invocations/{id}/logs")).await?;
    if fmt == Format::Json {
        emit(&output::json(&v));
        return Ok(());
    }
    let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
    if attempts.is_empty() {
        emit(&format!("no attempt of {id} has ended yet\n"));
        return Ok(());
    }
    let mut out = String::new();
    for a in &attempts {
        out.push_str(&format!("── attempt {} ──\n", output::text(&a["attempt"])));
        for l in a["logs"].as_array().into_iter().flatten() {
            let at = l["at_ms"].as_i64().map(output::time).unwrap_or_default();
            out.push_str(&format!("{at}  {:<5}  {}\n", output::text(&l["level"]), output::text(&l["message"])));
        }
        for stream in ["stdout", "stderr"] {
            let text = output::text(&a[stream]);
            if !text.is_empty() {
                out.push_str(&format!("[{stream}]\n{text}"));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        if a["output_truncated"] == true {
            out.push_str("(output truncated to its tail)\n");
        }
    }
    emit(&out);
    Ok(())
}

/// `warden ls tasks`.
pub async fn ls_tasks(c: &Client, fmt: Format) -> anyhow::Result<()> {
    let v = c.get("/v1/tasks").await?;
    if fmt == Format::Json {
        emit(&output::json(&v));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                output::text(&t["name"]),
                output::text(&t["component"]),
                output::text(&t["max_attempts"]),
                t["timeout_ms"].as_i64().map(output::duration).unwrap_or_default(),
                t["memory_limit_bytes"].as_u64().map(|b| format!("{} MiB", b >> 20)).unwrap_or_default(),
                if t["paused"] == true { "paused".into() } else { String::new() },
            ]
        })
        .collect();
    emit(&output::table(&["TASK", "COMPONENT", "ATTEMPTS", "TIMEOUT", "MEMORY", ""], &rows));
    Ok(())
}

/// `warden rate-limit set NAME --limit N --per-ms M [--key PATH] [--task T]…`: the limit, then
/// each task naming it.
pub async fn rate_limit_set(c: &Client, fmt: Format, name: &str, spec: &Value, tasks: &[String]) -> anyhow::Result<()> {
    let mut limit = c.put(&format!("/v1/rate-limits/{name}"), spec).await?;
    for t in tasks {
        c.patch(&format!("/v1/tasks/{t}"), &json!({"rate_limit": name})).await?;
    }
    if !tasks.is_empty() {
        limit = c.get(&format!("/v1/rate-limits/{name}")).await?;
    }
    match fmt {
        Format::Json => emit(&output::json(&limit)),
        Format::Text => emit(&format!(
            "rate limit {}
",
            describe_limit(&limit)
        )),
    }
    Ok(())
}

/// One limit for people: `api: 50 starts per 1 s per $.customer (tasks: hello)`.
fn describe_limit(l: &Value) -> String {
    let per = l["per_ms"].as_i64().map(output::duration).unwrap_or_default();
    let key = l["key"].as_str().map(|k| format!(" per {k}")).unwrap_or_default();
    let tasks: Vec<String> = l["tasks"].as_array().into_iter().flatten().map(output::text).collect();
    let tasks = if tasks.is_empty() { "no task names it".to_string() } else { format!("tasks: {}", tasks.join(", ")) };
    format!("{}: {} starts per {per}{key} ({tasks})", output::text(&l["name"]), output::text(&l["limit"]))
}

/// `warden rate-limit ls`.
pub async fn rate_limit_ls(c: &Client, fmt: Format) -> anyhow::Result<()> {
    let v = c.get("/v1/rate-limits").await?;
    if fmt == Format::Json {
        emit(&output::json(&v));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["rate_limits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let tasks: Vec<String> = l["tasks"].as_array().into_iter().flatten().map(output::text).collect();
            vec![
                output::text(&l["name"]),
                output::text(&l["limit"]),
                l["per_ms"].as_i64().map(output::duration).unwrap_or_default(),
                l["key"].as_str().unwrap_or("").to_string(),
                tasks.join(", "),
            ]
        })
        .collect();
    emit(&output::table(&["LIMIT", "STARTS", "PER", "KEY", "TASKS"], &rows));
    Ok(())
}

/// `warden rate-limit rm NAME`.
pub async fn rate_limit_rm(c: &Client, fmt: Format, name: &str) -> anyhow::Result<()> {
    c.delete(&format!("/v1/rate-limits/{name}")).await?;
    match fmt {
        Format::Json => emit(&output::json(&json!({"removed": name}))),
        Format::Text => emit(&format!(
            "removed rate limit {name}
"
        )),
    }
    Ok(())
}

/// `warden rate-limit unset TASK`.
pub async fn rate_limit_unset(c: &Client, fmt: Format, task: &str) -> anyhow::Result<()> {
    let t = c.patch(&format!("/v1/tasks/{task}"), &json!({"rate_limit": ""})).await?;
    match fmt {
        Format::Json => emit(&output::json(&t)),
        Format::Text => emit(&format!(
            "task {task} counts against no rate limit
"
        )),
    }
    Ok(())
}

/// `warden ls invocations [--task T] [--status S] [--limit N]`, newest first.
pub async fn ls_invocations(c: &Client, fmt: Format, query: &[(&str, String)]) -> anyhow::Result<()> {
    let v = c.get_query("/v1/invocations", query).await?;
    if fmt == Format::Json {
        emit(&output::json(&v));
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<Vec<String>> = v["invocations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                output::text(&i["id"]),
                output::text(&i["task"]),
                output::status(&output::text(&i["status"])),
                output::text(&i["attempts"]),
                i["created_at"].as_i64().map(|t| format!("{} ago", output::duration(now - t))).unwrap_or_default(),
            ]
        })
        .collect();
    emit(&output::table(&["ID", "TASK", "STATUS", "ATTEMPTS", "CREATED"], &rows));
    if let Some(next) = v["next_cursor"].as_str() {
        eprintln!("more: --cursor {next}");
    }
    Ok(())
}
