//! Loads the embedded object and attaches its programs with TCX links that
//! are pinned, so they stay attached after this process exits.

use aya::{
    EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
    },
};
use shoal_agent_common::names;

use super::{BpfRoot, CounterMap, DatapathError, EBPF_OBJECT, ifindex_of};

/// Held while links are checked and attached (see [`attach`]).
static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The counter programs and the hook each one goes on.
const COUNTER_PROGRAMS: [(&str, TcAttachType); 2] = [
    (names::COUNT_INGRESS, TcAttachType::Ingress),
    (names::COUNT_EGRESS, TcAttachType::Egress),
];

/// Attaches the packet and byte counters to `iface` (idempotent: hooks that
/// are already pinned stay as they are). Returns the interface's index.
pub fn attach_counters(root: &BpfRoot, iface: &str) -> Result<u32, DatapathError> {
    let ifindex = ifindex_of(iface)?;
    let wanted: Vec<_> = COUNTER_PROGRAMS
        .iter()
        .map(|(name, hook)| (*name, ifindex, *hook))
        .collect();
    // Counters go first so they see every packet, whatever later programs decide.
    attach(root, &wanted, LinkOrder::first)?;
    Ok(ifindex)
}

/// Attaches each `(program, ifindex, hook)` unless its pinned link is
/// there, at `order` among the hook's TCX programs. The object is loaded
/// (its maps reused from their pins) only when something must be attached
/// (re-attaching after an agent restart is the common case); links are
/// pinned so they outlive the agent. Links that other code pinned for the
/// same program and interface go once the new one is attached, so an
/// upgrade hands the packets over without a moment of no program.
pub(crate) fn attach(
    root: &BpfRoot,
    wanted: &[(&'static str, u32, TcAttachType)],
    order: fn() -> LinkOrder,
) -> Result<(), DatapathError> {
    // One attach at a time in this process: a push re-attaching a task's
    // veth (see `mesh::ensure_vips`) and the veth's own plug must not both
    // find its link missing and attach the program twice.
    let _one_at_a_time = ATTACHING.lock().unwrap_or_else(|e| e.into_inner());
    root.prepare()?;
    let missing: Vec<_> = wanted
        .iter()
        .filter(|(name, ifindex, _)| PinnedLink::from_pin(root.link(*ifindex, name)).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(root.maps_dir())
        .load(EBPF_OBJECT)?;
    for (name, ifindex, hook) in missing {
        let name: &'static str = name;
        let dir = root.links_dir(*ifindex);
        std::fs::create_dir_all(&dir).map_err(|source| DatapathError::Bpffs {
            path: dir.clone(),
            source,
        })?;
        let iface = super::ifname_of(*ifindex).ok_or(DatapathError::NoSuchInterface {
            name: format!("#{ifindex}"),
        })?;
        let program_error = |source| DatapathError::Program { name, source };
        let program = loaded_classifier(&mut ebpf, name)?;
        let link_id = program
            .attach_with_options(&iface, *hook, TcAttachOptions::TcxOrder(order()))
            .map_err(program_error)?;
        let pin = root.link(*ifindex, name);
        let link: FdLink = program
            .take_link(link_id)
            .map_err(program_error)?
            .try_into()
            .map_err(|source| DatapathError::Link {
                path: pin.clone(),
                source,
            })?;
        link.pin(&pin).map_err(|source| DatapathError::Pin {
            path: pin.clone(),
            source,
        })?;
        tracing::info!(%iface, ifindex, program = name, pin = %pin.display(), "attached");
        for old in root.other_links(*ifindex, name) {
            // The pin holds the old link's last reference: removing it
            // detaches the old program.
            match std::fs::remove_file(&old) {
                Ok(()) => tracing::info!(pin = %old.display(), "replaced another build's program"),
                Err(error) => {
                    tracing::warn!(pin = %old.display(), %error, "could not remove an old program's link")
                }
            }
        }
    }
    Ok(())
}

/// Detaches the counters from the interface with this index and forgets its
/// counts. Returns whether anything was attached.
pub fn detach_counters(root: &BpfRoot, ifindex: u32) -> Result<bool, DatapathError> {
    let mut found = false;
    for (name, _) in COUNTER_PROGRAMS {
        let mut pins = root.other_links(ifindex, name);
        pins.push(root.link(ifindex, name));
        for pin in pins {
            match PinnedLink::from_pin(&pin) {
                // Unpinning drops the last reference: the kernel detaches the program.
                Ok(link) => {
                    link.unpin().map_err(|source| DatapathError::Bpffs {
                        path: pin.clone(),
                        source,
                    })?;
                    found = true;
                }
                Err(error) => tracing::debug!(ifindex, program = name, %error, "not attached"),
            }
        }
    }
    let _ = std::fs::remove_dir(root.links_dir(ifindex));
    if let Ok(mut counters) = CounterMap::open(root) {
        counters.forget(ifindex)?;
    }
    Ok(found)
}

/// Removes the node's whole pinned tree: every link (the kernel detaches a
/// link when its last pin goes) and every map. Used when a node leaves.
pub fn remove_all(root: &BpfRoot) -> Result<(), DatapathError> {
    match std::fs::remove_dir_all(root.root()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Bpffs {
            path: root.root().to_owned(),
            source,
        }),
    }
}

/// The TC program `name` of `ebpf`, loaded into the kernel (the verifier
/// runs here), not yet attached anywhere.
pub(super) fn loaded_classifier<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    let program_error = |source| DatapathError::Program { name, source };
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DatapathError::Program {
            name,
            source: aya::programs::ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(program_error)?;
    program.load().map_err(program_error)?;
    Ok(program)
}
