//! Typed access to the pinned per-interface counter map.

use std::path::PathBuf;

use aya::maps::{Map, MapData, PerCpuHashMap};
use serde::Serialize;
use shoal_agent_common::{IfaceCounters, names};

use super::{BpfRoot, DatapathError, ifname_of};

/// One interface's totals over all CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceCount {
    pub ifindex: u32,
    /// `None` when the interface is gone from the caller's namespace.
    pub ifname: Option<String>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl InterfaceCount {
    fn new(ifindex: u32, totals: IfaceCounters) -> Self {
        Self {
            ifindex,
            ifname: ifname_of(ifindex),
            rx_packets: totals.rx_packets,
            rx_bytes: totals.rx_bytes,
            tx_packets: totals.tx_packets,
            tx_bytes: totals.tx_bytes,
        }
    }
}

/// The `IFACE_COUNTERS` map of one node, opened from its pin.
pub struct CounterMap {
    path: PathBuf,
    map: PerCpuHashMap<MapData, u32, IfaceCounters>,
}

impl CounterMap {
    pub fn open(root: &BpfRoot) -> Result<Self, DatapathError> {
        let path = root.map(names::IFACE_COUNTERS);
        if !path.exists() {
            return Err(DatapathError::NotAttached(root.root().to_owned()));
        }
        let map_error = |source| DatapathError::Map {
            path: path.clone(),
            source,
        };
        let data = MapData::from_pin(&path).map_err(map_error)?;
        let map = Map::from_map_data(data).map_err(map_error)?;
        let map = PerCpuHashMap::try_from(map).map_err(map_error)?;
        Ok(Self { path, map })
    }

    /// Totals of every counted interface, sorted by index.
    pub fn read_all(&self) -> Result<Vec<InterfaceCount>, DatapathError> {
        let mut all = Vec::new();
        for entry in self.map.iter() {
            let (ifindex, per_cpu) = entry.map_err(|source| DatapathError::Map {
                path: self.path.clone(),
                source,
            })?;
            all.push(InterfaceCount::new(ifindex, sum(per_cpu.iter())));
        }
        all.sort_by_key(|count| count.ifindex);
        Ok(all)
    }

    /// Totals of one interface; zero when it has seen no packet yet.
    pub fn read(&self, ifindex: u32) -> Result<InterfaceCount, DatapathError> {
        let totals = match self.map.get(&ifindex, 0) {
            Ok(per_cpu) => sum(per_cpu.iter()),
            Err(aya::maps::MapError::KeyNotFound) => IfaceCounters::default(),
            Err(source) => {
                return Err(DatapathError::Map {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Ok(InterfaceCount::new(ifindex, totals))
    }

    pub(crate) fn forget(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.map.remove(&ifindex) {
            Ok(()) => Ok(()),
            Err(error) if is_missing_key(&error) => Ok(()),
            Err(source) => Err(DatapathError::Map {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// aya reports a missing key on delete as the raw ENOENT of the syscall.
pub(super) fn is_missing_key(error: &aya::maps::MapError) -> bool {
    match error {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn sum<'a>(slots: impl Iterator<Item = &'a IfaceCounters>) -> IfaceCounters {
    slots.fold(IfaceCounters::default(), |mut total, slot| {
        total.add(slot);
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_cpu_slot() {
        let slots = [
            IfaceCounters {
                rx_packets: 2,
                rx_bytes: 200,
                tx_packets: 0,
                tx_bytes: 0,
            },
            IfaceCounters {
                rx_packets: 3,
                rx_bytes: 300,
                tx_packets: 1,
                tx_bytes: 98,
            },
        ];
        assert_eq!(
            sum(slots.iter()),
            IfaceCounters {
                rx_packets: 5,
                rx_bytes: 500,
                tx_packets: 1,
                tx_bytes: 98
            }
        );
    }
}
