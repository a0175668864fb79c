//! A steady HTTP load: short requests, each on a new connection, spread
//! over several entry addresses, at a fixed rate, counting every failure.
//! One line per request on stdout, `<ms since start> <entry> <task>` or
//! `<ms> <entry> FAILED <why>`, and a last summary line
//! `# requests=N failed=F seconds=S rate=R`. Runs until its time is up or
//! it gets SIGTERM/SIGINT (then it finishes the requests in flight).

use std::{
    io::Write,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::http;

pub struct Load {
    pub entries: Vec<SocketAddr>,
    pub rate: u32,
    pub workers: u32,
    pub seconds: u64,
    pub timeout: Duration,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub requests: u64,
    pub failed: u64,
}

/// The task name an echo answer carries (`{"task": …}`), or the body.
fn task_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["task"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// Runs the load, writing one line per request and the summary to `out`.
pub fn run(load: &Load, out: impl Write + Send + 'static) -> Summary {
    let workers = load.workers.max(1);
    let start = Instant::now();
    let end = start + Duration::from_secs(load.seconds);
    // Each worker sends every `gap`: together, `rate` requests a second.
    let gap = Duration::from_secs_f64(f64::from(workers) / f64::from(load.rate.max(1)));
    let requests = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(out));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let entries = load.entries.clone();
            let (requests, failed, out) = (requests.clone(), failed.clone(), out.clone());
            let timeout = load.timeout;
            thread::spawn(move || {
                let mut due = start + gap.mul_f64(f64::from(w) / f64::from(workers));
                let mut n = w as usize;
                while Instant::now() < end && !crate::TERMINATING.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    due += gap;
                    let entry = entries[n % entries.len()];
                    n += 1;
                    let at = start.elapsed().as_millis();
                    let line = match http::get(entry, "load", "/", timeout) {
                        Ok(r) if r.status == 200 => format!("{at} {entry} {}", task_of(&r.body)),
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            format!("{at} {entry} FAILED status {}", r.status)
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            format!("{at} {entry} FAILED {e}")
                        }
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "{line}");
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    let summary = Summary {
        requests: requests.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    };
    let seconds = start.elapsed().as_secs_f64();
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(
        out,
        "# requests={} failed={} seconds={seconds:.1} rate={:.0}",
        summary.requests,
        summary.failed,
        summary.requests as f64 / seconds.max(0.001)
    );
    let _ = out.flush();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn every_request_is_counted_and_failures_are_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let _ = http::read_request(&mut reader);
                let mut out = stream;
                let _ = http::write_response(
                    &mut out,
                    200,
                    "application/json",
                    b"{\"task\":\"web.1\"}\n",
                    false,
                );
            }
        });
        // Nothing listens on port 1 of loopback: refused at once.
        let down: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let summary = run(
            &Load {
                entries: vec![up, down],
                rate: 200,
                workers: 2,
                seconds: 1,
                timeout: Duration::from_secs(1),
            },
            std::io::sink(),
        );
        assert!(summary.requests >= 100, "{summary:?}");
        assert_eq!(summary.failed * 2, summary.requests, "{summary:?}");
        assert_eq!(task_of("{\"task\":\"web.1\"}\n"), "web.1");
    }
}
