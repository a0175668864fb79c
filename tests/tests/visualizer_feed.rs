//! The visualizer's feed end to end without a browser: a real manager
//! (Raft, store, scheduler) and a simulated agent; the page's event stream
//! read over HTTP as a browser's EventSource reads it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use shoal_tests::cluster::{TestCluster, replicated};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(15);

/// Reads `text/event-stream` events from a response, in order.
struct Feed {
    stream: TcpStream,
    buffer: String,
}

impl Feed {
    async fn open(addr: std::net::SocketAddr) -> Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
            .await?;
        let mut feed = Self {
            stream,
            buffer: String::new(),
        };
        feed.fill_until("\r\n\r\n").await?;
        let (head, rest) = feed.buffer.split_once("\r\n\r\n").context("no header")?;
        ensure!(head.starts_with("HTTP/1.1 200"), "answer: {head}");
        ensure!(
            head.to_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        feed.buffer = rest.to_owned();
        Ok(feed)
    }

    async fn fill_until(&mut self, marker: &str) -> Result<()> {
        let mut chunk = [0u8; 65536];
        while !self.buffer.contains(marker) {
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .context("no event within the wait")??;
            ensure!(n > 0, "the feed ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        Ok(())
    }

    /// The next event (its name and JSON data). The body is chunked: a
    /// chunk's size line sits between events and is skipped.
    async fn next(&mut self) -> Result<(String, Value)> {
        loop {
            self.fill_until("\n\n").await?;
            let end = self.buffer.find("\n\n").unwrap_or(0);
            let block: String = self.buffer[..end].to_owned();
            self.buffer.drain(..end + 2);
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d)?);
                }
            }
            if let (Some(name), Some(data)) = (name, data) {
                return Ok((name, data));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_gets_the_cluster_then_each_change_as_it_is_applied() -> Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    cluster.add_agent("n1", &[("zone", "a")]).await?;
    let manager = cluster.managers[0]
        .as_ref()
        .context("manager")?
        .manager
        .clone();
    let addr = shoal_manager::web::serve(manager, "127.0.0.1:0".parse()?).await?;

    let mut feed = Feed::open(addr).await?;
    let (name, snapshot) = feed.next().await?;
    ensure!(name == "snapshot", "first event: {name}");
    let n1 = snapshot["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["hostname"] == "n1"))
        .context("n1 not in the snapshot")?;
    ensure!(
        n1["status"] == "ready" && n1["labels"]["zone"] == "a",
        "{n1}"
    );

    // Two tasks appear as changes, then run, with no new request.
    let mut control = cluster.control().await?;
    control.create_service(replicated("web", 2)).await?;
    let mut running = std::collections::BTreeSet::new();
    let mut seen_service = false;
    while running.len() < 2 {
        let (name, change) = feed.next().await?;
        ensure!(name == "change", "event {name} after the snapshot");
        for put in change["put"].as_array().context("put")? {
            match put["kind"].as_str() {
                Some("service") => seen_service |= put["service"]["name"] == "web",
                Some("task") if put["task"]["state"] == "running" => {
                    ensure!(put["task"]["node"] == n1["id"], "{put}");
                    running.insert(put["task"]["slot"].as_u64().unwrap_or(0));
                }
                _ => {}
            }
        }
    }
    ensure!(seen_service, "the service never came as a change");
    ensure!(running == [1, 2].into(), "slots {running:?}");

    // Anything but the page and its feed is refused by name.
    let mut other = TcpStream::connect(addr).await?;
    other
        .write_all(b"GET /secrets HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    other.read_to_string(&mut answer).await?;
    ensure!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    Ok(())
}
