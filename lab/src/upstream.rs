//! The outside world's resolver: dnsmasq on the client host at 192.0.2.53,
//! authoritative for a small fake zone. Names outside it get REFUSED, as
//! nothing beyond the lab may be asked.

use std::{path::Path, time::Duration};

use crate::{
    LabError,
    state::StateDir,
    topology::{CLIENT_NS, UPSTREAM_DNS_ADDR, UPSTREAM_RECORDS, UPSTREAM_ZONE},
};

pub const PROCESS_NAME: &str = "dnsmasq";

fn config() -> String {
    let mut conf = format!(
        "# Written by shoal-lab: the lab's upstream resolver.\n\
         no-resolv\nno-hosts\nno-poll\nbind-interfaces\n\
         listen-address={UPSTREAM_DNS_ADDR}\nport=53\n\
         # Authoritative for the zone: unknown names in it are NXDOMAIN.\n\
         local=/{UPSTREAM_ZONE}/\nlog-queries\n"
    );
    for (name, addr) in UPSTREAM_RECORDS {
        conf.push_str(&format!("host-record={name},{addr}\n"));
    }
    conf
}

/// Starts dnsmasq unless it already runs.
pub fn ensure(state: &StateDir) -> Result<bool, LabError> {
    if state.process(PROCESS_NAME).is_some_and(|p| p.alive()) {
        return Ok(false);
    }
    let conf_path = state.path().join("dnsmasq.conf");
    std::fs::write(&conf_path, config()).map_err(|source| LabError::Io {
        what: format!("writing {}", conf_path.display()),
        source,
    })?;
    let command = vec![
        "dnsmasq".to_owned(),
        "--keep-in-foreground".to_owned(),
        "--log-facility=-".to_owned(),
        "--user=root".to_owned(),
        format!("--conf-file={}", conf_path.display()),
        format!("--pid-file={}", state.path().join("dnsmasq.pid").display()),
    ];
    let record = state.spawn(PROCESS_NAME, CLIENT_NS, &command)?;
    wait_listening(&record.log, Duration::from_secs(5))?;
    Ok(true)
}

fn wait_listening(log: &Path, timeout: Duration) -> Result<(), LabError> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("started, version") {
            return Ok(());
        }
        if text.contains("FAILED") || text.contains("failed to") {
            return Err(LabError::Upstream(text));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(LabError::Upstream(format!(
        "dnsmasq did not start within {timeout:?}; see {}",
        log.display()
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_serves_only_the_fake_zone() {
        let conf = super::config();
        assert!(conf.contains("listen-address=192.0.2.53"));
        assert!(conf.contains("no-resolv"));
        assert!(conf.contains("local=/upstream.test/"));
        assert!(conf.contains("host-record=www.upstream.test,192.0.2.200"));
    }
}
