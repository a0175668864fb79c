//! Keeping the data plane's DNS maps (see `datapath::dns`) in line with
//! the records the agent's server answers from: each push writes them just
//! before the server takes the new records, and a veth plugged in between
//! two pushes is added as it is plugged.

use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{Context, Result};
use shoal_api::pb::AssignmentSet;

use super::{Overlay, netlink::Link, network_id, veth_names};
use crate::{
    datapath::{
        dns::{Asker, DnsCounts, DnsMaps},
        mesh,
    },
    dns::Records,
};

impl Overlay {
    /// Writes what `records` answer to the DNS maps, for this node's task
    /// veths among `links`. On failure the caller calls
    /// [`Self::stop_dns_at_veths`] (the server answers them all), so the
    /// two never disagree.
    pub(super) fn sync_dns_maps(
        &self,
        set: &AssignmentSet,
        records: &Records,
        links: &[Link],
    ) -> Result<()> {
        let Some(root) = &self.bpf_root else {
            return Ok(());
        };
        let veths: HashMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.index)).collect();
        let gateways: HashMap<&str, Ipv4Addr> = set
            .networks
            .iter()
            .filter_map(|n| Some((network_id(n), n.gateway.parse().ok()?)))
            .collect();
        let askers: Vec<Asker> = set
            .endpoints
            .iter()
            .filter_map(|e| {
                let addr: Ipv4Addr = e.addr.parse().ok()?;
                if !records.is_local(addr) {
                    return None;
                }
                let (veth, _) = veth_names(&e.task_id, &e.network_id);
                Some(Asker {
                    ifindex: *veths.get(veth.as_str())?,
                    addr,
                    gateway: *gateways.get(e.network_id.as_str())?,
                })
            })
            .collect();
        let mut guard = self.dns_maps.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            mesh::ensure_maps(root)?;
            *guard = Some(DnsMaps::open(root)?);
        }
        let maps = guard.as_mut().context("DNS maps")?;
        // On failure the caller stops every veth answering.
        maps.sync(records, &askers).context("DNS maps")?;
        tracing::debug!(
            askers = askers.len(),
            names = maps.names_held(),
            "DNS maps in line with the records"
        );
        Ok(())
    }

    /// After a push whose DNS maps could not be written (or not even
    /// opened): no veth answers from views older than the records the
    /// server is about to take, so none can say NXDOMAIN for a new name.
    pub(super) fn stop_dns_at_veths(&self) {
        let Some(root) = &self.bpf_root else {
            return;
        };
        let mut guard = self.dns_maps.lock().unwrap_or_else(|e| e.into_inner());
        let result = match guard.as_mut() {
            Some(maps) => maps.clear_askers(),
            None => DnsMaps::open(root).and_then(|mut maps| {
                let cleared = maps.clear_askers();
                *guard = Some(maps);
                cleared
            }),
        };
        if let Err(error) = result {
            tracing::error!(%error, "DNS maps: could not stop answering at the veths; they may answer from older records");
        }
    }

    /// A task's veth plugged in since the last push.
    pub(super) fn dns_plugged(&self, asker: Asker) {
        let mut guard = self.dns_maps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(maps) = guard.as_mut()
            && let Err(error) = maps.plugged(asker)
        {
            tracing::warn!(%error, ifindex = asker.ifindex, "DNS maps: a new veth stays with the server");
        }
    }

    /// What the veths' DNS program answered (None before the first push).
    pub fn dns_counts(&self) -> Option<DnsCounts> {
        let guard = self.dns_maps.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().and_then(|m| m.counts().ok())
    }
}
