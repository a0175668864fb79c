//! Live progress of services converging after a create, update, rollback
//! or stack deploy, as Docker users know it: `overall progress: N out of M
//! tasks`, a bar per task (up to 20), then `verify: Service converged`.
//! Redrawn in place on a terminal, counting the rows lines take once they
//! wrap on a narrow one; plain lines, only when something changes,
//! otherwise.

use std::{collections::BTreeMap, io::IsTerminal, time::Duration};

use anyhow::{Result, bail};
use shoal_api::pb::{Service, ServiceMode, Task, TaskState};

use super::job_progress::JobWatch;
use super::service::{service_id, service_name, services};
use crate::{
    client::{Client, tasks},
    output::tabwriter::display_width,
};

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
        // Jobs are watched by job_progress.
        _ => slots.len(),
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

/// The terminal's width, when stdout is one that says.
fn terminal_columns() -> Option<usize> {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|size| usize::from(size.ws_col))
        .filter(|columns| *columns > 0)
}

/// Terminal rows `lines` take: a line wider than the terminal wraps onto
/// more rows (by display width: wide characters take two columns).
fn rows_taken(lines: &[String], columns: Option<usize>) -> usize {
    lines
        .iter()
        .map(|line| match columns {
            Some(columns) => display_width(line).div_ceil(columns).max(1),
            None => 1,
        })
        .sum()
}

/// What replaces the `drawn` rows last drawn with `lines`: up to the first
/// of them, clear to the end of the screen (rows a wrapped line left
/// behind too), then the lines.
fn redraw(drawn: usize, lines: &[String]) -> String {
    let mut out = String::new();
    if drawn > 0 {
        out.push_str(&format!("\x1b[{drawn}A\r\x1b[J"));
    }
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Lines redrawn in place on a terminal; elsewhere, each new line once.
struct Screen {
    /// `-q`: nothing is drawn.
    quiet: bool,
    tty: bool,
    drawn: usize,
    last_plain: Vec<String>,
}

impl Screen {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            last_plain: Vec::new(),
        }
    }

    fn show(&mut self, lines: Vec<String>) {
        if self.quiet {
            return;
        }
        if self.tty {
            print!("{}", redraw(self.drawn, &lines));
            self.drawn = rows_taken(&lines, terminal_columns());
        } else {
            // Plain output: what changed, once.
            for line in &lines {
                if !self.last_plain.contains(line) {
                    println!("{line}");
                }
            }
            self.last_plain = lines;
        }
    }
}

/// Waits until each service in `ids` runs its desired tasks on its
/// current spec and any update is complete, showing progress. Fails if an
/// update pauses, or rolls back unless `rollback` asked for it. A job is
/// waited for until it completes (its current iteration), as Docker's.
pub async fn converge(client: &mut Client, ids: &[String], rollback: bool) -> Result<()> {
    converge_with(client, ids, rollback, false).await
}

/// [`converge`], drawing nothing when `quiet` (`-q`: the wait and its
/// errors stay).
pub async fn converge_with(
    client: &mut Client,
    ids: &[String],
    rollback: bool,
    quiet: bool,
) -> Result<()> {
    for id in ids {
        let mut screen = Screen::new(quiet);
        let mut job = JobWatch::default();
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
            if service.spec.as_ref().is_some_and(|s| s.mode().is_job()) {
                let view = job.observe(&service, &tasks);
                screen.show(view.lines);
                if let Some(why) = view.failed {
                    bail!("{why}");
                }
                if view.complete {
                    break;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
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
            screen.show(render(service_name(&service), &snap, &verify));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn wrapped_lines_count_every_row_they_take() {
        let bar = format!("1/3: running   {}", bar(TaskState::Running));
        assert_eq!(display_width(&bar), 68);
        let drawn = lines(&["web", "overall progress: 1 out of 3 tasks", &bar]);
        assert_eq!(rows_taken(&drawn, Some(80)), 3);
        // 68 columns on a 40-column terminal: two rows, on 20: four; 34 on 20: two.
        assert_eq!(rows_taken(&drawn, Some(40)), 1 + 1 + 2);
        assert_eq!(rows_taken(&drawn, Some(20)), 1 + 2 + 4);
        // Exactly as wide as the terminal: one row; empty: one row.
        assert_eq!(rows_taken(&lines(&["abcd", ""]), Some(4)), 2);
        // Wide characters take two columns each.
        assert_eq!(rows_taken(&lines(&["数据库服务"]), Some(8)), 2);
        // No known width: a row per line.
        assert_eq!(rows_taken(&drawn, None), 3);
    }

    #[test]
    fn redraws_go_back_over_every_row_and_clear_what_was_left() {
        let first = redraw(0, &lines(&["a", "b"]));
        assert_eq!(first, "a\nb\n");
        let again = redraw(5, &lines(&["a", "c"]));
        assert_eq!(again, "\x1b[5A\r\x1b[Ja\nc\n");
    }
}
