//! Debian's headless `chromium`, driven over the DevTools protocol for
//! page tests. The protocol runs over `--remote-debugging-pipe` (NUL-ended
//! JSON messages on the browser's descriptors 3 and 4), which two FIFOs
//! hand to it through `sh`: no websocket client, no debugging port any
//! process on the host could reach, no `unsafe` descriptor plumbing.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cmd;

/// The browser Debian packages (`cargo xtask setup` installs it).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless browser with one page open, in a lab host's namespace.
pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _dir: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromium in `netns` (None: this host's) with a page of
    /// `width`×`height` CSS pixels (a laptop screen: 1366×768).
    pub fn start(netns: Option<&str>, width: u32, height: u32) -> Result<Self> {
        if !Path::new(CHROMIUM).exists() {
            bail!("{CHROMIUM} is missing: run `cargo xtask setup` (Debian's chromium)");
        }
        let dir = tempfile::tempdir()?;
        let (to, from) = (
            dir.path().join("to-browser"),
            dir.path().join("from-browser"),
        );
        for fifo in [&to, &from] {
            cmd::run("mkfifo", &["-m", "0600", &fifo.display().to_string()])?;
        }
        let profile = dir.path().join("profile");
        let script = format!(
            "exec {CHROMIUM} --headless --no-sandbox --disable-gpu --no-first-run \
             --disable-background-networking --disable-component-update --disable-sync \
             --disable-dev-shm-usage --user-data-dir={} --window-size={width},{height} \
             --remote-debugging-pipe about:blank 3<{} 4>{}",
            profile.display(),
            to.display(),
            from.display()
        );
        let mut command = match netns {
            Some(netns) => cmd::in_netns(netns, "sh"),
            None => std::process::Command::new("sh"),
        };
        let child = command
            .args(["-c", &script])
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromium")?;
        // The same order as the shell's redirections, or both would wait.
        let to_browser = File::options()
            .write(true)
            .open(&to)
            .context("opening the browser's command pipe")?;
        let reader = File::open(&from).context("opening the browser's reply pipe")?;
        let (tx, from_browser) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        let mut browser = Self {
            child,
            to_browser,
            from_browser,
            next_id: 0,
            session: String::new(),
            _dir: dir,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .context("no targetId")?
            .to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(browser)
    }

    /// Sends one command (to the page once attached) and waits for its
    /// result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .with_context(|| format!("sending {method} to chromium"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from_browser
                .recv_timeout(left)
                .with_context(|| format!("chromium did not answer {method}"))?;
            if reply["id"] != id {
                continue; // an event, or another session's reply
            }
            if let Some(error) = reply.get("error") {
                bail!("chromium: {method}: {error}");
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        let result = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = result.get("errorText") {
            bail!("chromium could not open {url}: {error}");
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            // While the old document goes, evaluating may fail: not yet.
            let state = self.eval("[location.href, document.readyState]").ok();
            if state == Some(json!([url, "complete"])) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{url} did not load in chromium within {COMMAND_TIMEOUT:?} (last seen: {state:?})"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of a JavaScript expression in the page (JSON-able).
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            bail!("the page threw on {expression:?}: {details}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// A PNG of what the page shows, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = shot["data"].as_str().context("no screenshot data")?;
        let png = shoal_api::base64::decode(data).context("screenshot data")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}
