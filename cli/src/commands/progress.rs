//! Live progress of services converging after a create, update, rollback
//! or stack deploy, as Docker users know it: `overall progress: N out of M
//! tasks`, a bar per task (up to 20), then `verify: Service converged`.
//! Redrawn in place on a terminal; plain lines, only when something
//! changes, otherwise.

use std::{collections::BTreeMap, io::IsTerminal, time::Duration};

use anyhow::{Result, bail};
use shoal_api::pb::{Service, ServiceMode, Task, TaskState};

use super::service::{service_id, service_name, services};
use crate::client::{Client, tasks};

const BARS_SHOWN: usize = 20;
const POLL: Duration = Duration::from_millis(300);
/// How long converged tasks must stay running before `verify` says so
/// (an update's own monitor window is waited for through its status).
const VERIFY: Duration = Duration::from_secs(1);

/// One slot's newest task: its state and a word on it.
struct Row {
    label: String,
    state: TaskState,
    message: String,
}

struct Snapshot {
    rows: Vec<Row>,
    running: usize,
    desired: usize,
    /// `update_status`: (state, message).
    update: Option<(String, String)>,
}

fn snapshot(service: &Service, tasks: &[Task]) -> Snapshot {
    let spec = service.spec.clone().unwrap_or_default();
    let current: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.service_id == service_id(service))
        .filter(|t| t.desired_state() == TaskState::Running)
        .collect();
    let mut slots: BTreeMap<String, &Task> = BTreeMap::new();
    for task in &current {
        let key = if task.slot > 0 {
            format!("{:>6}", task.slot)
        } else {
            task.node_id.clone()
        };
        let newer = |old: &&Task| {
            old.status.as_ref().map_or(0, |s| s.timestamp)
                <= task.status.as_ref().map_or(0, |s| s.timestamp)
        };
        // Prefer the task on the current spec (the update's new one).
        let up_to_date = |t: &Task| t.spec == spec.task;
        match slots.get(&key) {
            Some(old) if up_to_date(old) && !up_to_date(task) => {}
            Some(old) if up_to_date(old) == up_to_date(task) && !newer(old) => {}
            _ => {
                slots.insert(key, task);
            }
        }
    }
    let desired = match spec.mode() {
        ServiceMode::Replicated => spec.replicas as usize,
        ServiceMode::Global => slots.len(),
    };
    let rows: Vec<Row> = slots
        .values()
        .enumerate()
        .map(|(i, t)| {
            let status = t.status.clone().unwrap_or_default();
            Row {
                label: if t.slot > 0 {
                    format!("{}/{}", t.slot, desired)
                } else {
                    format!("{}", i + 1)
                },
                state: if t.spec == spec.task {
                    status.state()
                } else {
                    TaskState::New
                },
                message: if status.err.is_empty() {
                    String::new()
                } else {
                    status.err
                },
            }
        })
        .collect();
    let running = rows
        .iter()
        .filter(|r| r.state == TaskState::Running)
        .count();
    Snapshot {
        rows,
        running,
        desired,
        update: service
            .update_status
            .as_ref()
            .map(|u| (u.state.clone(), u.message.clone())),
    }
}

fn bar(state: TaskState) -> String {
    // Docker's steps: new … running, as a share of the bar.
    let steps = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
    ];
    let at = steps.iter().position(|s| *s == state).map_or(0, |i| i + 1);
    let width = 50;
    let filled = width * at / steps.len();
    if filled >= width {
        format!("[{}>]", "=".repeat(width))
    } else {
        format!("[{}>{}]", "=".repeat(filled), " ".repeat(width - filled))
    }
}

fn word(state: TaskState) -> String {
    format!("{state:?}").to_lowercase()
}

fn render(service: &str, snap: &Snapshot, verify: &str) -> Vec<String> {
    let mut lines = vec![
        service.to_owned(),
        format!(
            "overall progress: {} out of {} tasks",
            snap.running, snap.desired
        ),
    ];
    for row in snap.rows.iter().take(BARS_SHOWN) {
        let mut line = format!("{}: {:<9} {}", row.label, word(row.state), bar(row.state));
        if !row.message.is_empty() {
            line.push_str(&format!(" {}", row.message));
        }
        lines.push(line);
    }
    if !verify.is_empty() {
        lines.push(format!("verify: {verify}"));
    }
    lines
}

/// Waits until each service in `ids` runs its desired tasks on its
/// current spec and any update is complete, showing progress. Fails if an
/// update pauses, or rolls back unless `rollback` asked for it.
pub async fn converge(client: &mut Client, ids: &[String], rollback: bool) -> Result<()> {
    converge_showing(client, ids, rollback, true).await
}

/// As [`converge`], drawing the progress only if `show` (`-q` waits as
/// long, silently).
pub async fn converge_showing(
    client: &mut Client,
    ids: &[String],
    rollback: bool,
    show: bool,
) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    for id in ids {
        let mut drawn = 0usize;
        let mut last_plain: Vec<String> = Vec::new();
        let mut stable_since: Option<std::time::Instant> = None;
        loop {
            let all = services(client).await?;
            let Some(service) = all
                .into_iter()
                .filter_map(|s| s.service)
                .find(|s| service_id(s) == id)
            else {
                bail!("service {id} was removed while deploying");
            };
            let tasks = tasks(client).await?;
            let snap = snapshot(&service, &tasks);
            let update_state = snap.update.as_ref().map(|u| u.0.as_str()).unwrap_or("");
            let updating = matches!(update_state, "updating" | "rollback_started");
            let done = snap.running == snap.desired && !updating;
            stable_since = if done {
                stable_since.or_else(|| Some(std::time::Instant::now()))
            } else {
                None
            };
            let converged = stable_since.is_some_and(|t| t.elapsed() >= VERIFY);
            let verify = match (converged, done) {
                (true, _) => "Service converged".to_owned(),
                (false, true) => "Waiting for the tasks to stay running...".to_owned(),
                _ => String::new(),
            };
            let lines = render(service_name(&service), &snap, &verify);
            if !show {
            } else if tty {
                if drawn > 0 {
                    print!("\x1b[{drawn}A");
                }
                for line in &lines {
                    println!("\x1b[2K{line}");
                }
                drawn = lines.len();
            } else {
                // Plain output: what changed, once.
                for line in &lines {
                    if !last_plain.contains(line) {
                        println!("{line}");
                    }
                }
                last_plain = lines;
            }
            match update_state {
                "paused" | "rollback_paused" => {
                    let message = snap.update.map(|u| u.1).unwrap_or_default();
                    bail!("{}: {message}", service_name(&service));
                }
                "rollback_completed" if converged && !rollback => {
                    let message = snap.update.map(|u| u.1).unwrap_or_default();
                    bail!("{}: rolled back: {message}", service_name(&service));
                }
                _ => {}
            }
            if converged {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}
