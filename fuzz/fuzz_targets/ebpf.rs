//! The data plane's real programs (the object the agent embeds, loaded by
//! aya as the agent loads it) under `BPF_PROG_TEST_RUN`, with maps the
//! agent's own wrappers fill: a node with a published TCP port (three
//! backends: one here, two on other nodes, one draining), a host-mode
//! UDP port and a VIP. The input is up to four packets (split at
//! [`shoal_fuzz::packets::SEPARATOR`]), each a program byte (its index, and
//! whether the device has a task source written) then an Ethernet frame,
//! run in order against fresh connection tables; after each, the checks in
//! `shoal_fuzz::mesh` must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_fuzz::{mesh::Node, packets};

fuzz_target!(|data: &[u8]| {
    let node = Node::get();
    node.forget_connections();
    for packet in packets::split(data) {
        node.run_and_check(packet.program, packet.frame, packet.judged);
    }
});
