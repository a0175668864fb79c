//! What the fuzz targets in `fuzz_targets/` share: the eBPF harness
//! ([`mesh`]) and the packet framing of its inputs ([`packets`]).

pub mod mesh;
pub mod packets;
