//! The mesh bench's peers on the entry node, to the same two tasks:
//! HAProxy 2.6 (`mode tcp`, roundrobin, :9000) and iptables DNAT
//! (`statistic nth` + SNAT, as kube-proxy does, :9001). Both send from n3's
//! ingress address (the only one the tasks can answer), and their rules
//! must not touch the mesh's packets: `off` takes the iptables rules out
//! while Shoal's rows run.

use std::{
    path::Path,
    process::{Child, Stdio},
};

use anyhow::{Context, Result};
use shoal_lab::cmd;

use crate::mesh::in_netns;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Peers {
    entry_ns: String,
    entry_addr: &'static str,
    ingress: String,
    tasks: [String; 2],
    _haproxy: Killed,
}

impl Peers {
    /// Starts HAProxy and installs the DNAT rules (on).
    pub(crate) fn start(
        entry_ns: &str,
        entry_addr: &'static str,
        ingress: &str,
        tasks: [String; 2],
        dir: &Path,
    ) -> Result<Self> {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend f\n  bind {entry_addr}:9000\n  default_backend b\n\
                 backend b\n  balance roundrobin\n  source {ingress}\n  server t1 {}:80\n  server t2 {}:80\n",
                tasks[0], tasks[1]
            ),
        )?;
        let haproxy = Killed(
            cmd::in_netns(entry_ns, "haproxy")
                .args(["-db", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting haproxy (cargo xtask setup installs it)")?,
        );
        let peers = Self {
            entry_ns: entry_ns.to_owned(),
            entry_addr,
            ingress: ingress.to_owned(),
            tasks,
            _haproxy: haproxy,
        };
        let _ = in_netns(
            entry_ns,
            "iptables",
            &["-w", "-t", "nat", "-N", "SHOAL_BENCH"],
        );
        peers.iptables(&["-t", "nat", "-F", "SHOAL_BENCH"])?;
        peers.off();
        peers.set_other_services(1, dir)?;
        // The mesh's packets meet n3's netfilter too once bridged
        // (br_netfilter): a conntrack entry left in TIME_WAIT by the
        // peers would rewrite their ports.
        shoal_lab::netns::write_sysctl(
            entry_ns,
            "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
            "1",
        )?;
        peers.on()?;
        Ok(peers)
    }

    fn iptables(&self, rule: &[&str]) -> Result<()> {
        in_netns(&self.entry_ns, "iptables", &[&["-w"], rule].concat())?;
        Ok(())
    }

    fn snat(&self) -> [&str; 14] {
        [
            "-t",
            "nat",
            "-I",
            "POSTROUTING",
            "-d",
            "198.18.0.0/15",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "SNAT",
            "--to-source",
            &self.ingress,
        ]
    }

    /// The DNAT chain and the SNAT rule in place.
    pub(crate) fn on(&self) -> Result<()> {
        self.iptables(&["-t", "nat", "-I", "PREROUTING", "-j", "SHOAL_BENCH"])?;
        self.iptables(&self.snat())
    }

    /// Both out (best effort: a rule already gone is fine).
    pub(crate) fn off(&self) {
        let del: Vec<&str> = std::iter::once("-w")
            .chain(
                self.snat()
                    .into_iter()
                    .map(|a| if a == "-I" { "-D" } else { a }),
            )
            .collect();
        let _ = in_netns(&self.entry_ns, "iptables", &del);
        let _ = in_netns(
            &self.entry_ns,
            "iptables",
            &["-w", "-t", "nat", "-D", "PREROUTING", "-j", "SHOAL_BENCH"],
        );
    }

    /// The DNAT chain with `services - 1` rules for other services ahead
    /// of the measured port's two (9001, round-robin by `statistic nth`).
    pub(crate) fn set_other_services(&self, services: usize, dir: &Path) -> Result<()> {
        let entry = self.entry_addr;
        self.iptables(&["-t", "nat", "-F", "SHOAL_BENCH"])?;
        let mut restore = String::from("*nat\n");
        for i in 1..services {
            restore.push_str(&format!(
                "-A SHOAL_BENCH -d {entry}/32 -p tcp -m tcp --dport {} -j DNAT --to-destination {}:80\n",
                20000 + i,
                self.tasks[0]
            ));
        }
        for (every, to) in [("2", &self.tasks[0]), ("1", &self.tasks[1])] {
            restore.push_str(&format!(
                "-A SHOAL_BENCH -d {entry}/32 -p tcp -m tcp --dport 9001 -m statistic --mode nth --every {every} --packet 0 -j DNAT --to-destination {to}:80\n"
            ));
        }
        restore.push_str("COMMIT\n");
        let file = dir.join("rules");
        std::fs::write(&file, restore)?;
        in_netns(
            &self.entry_ns,
            "iptables-restore",
            &["-w", "--noflush", &file.display().to_string()],
        )?;
        Ok(())
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.off();
        let _ = in_netns(
            &self.entry_ns,
            "iptables",
            &["-w", "-t", "nat", "-F", "SHOAL_BENCH"],
        );
    }
}
