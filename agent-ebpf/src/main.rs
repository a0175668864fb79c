//! Shoal's eBPF data plane. Built for `bpfel-unknown-none` by the agent's build
//! script and embedded in `shoal-agent`; the agent loads, attaches and pins it.
#![no_std]
#![no_main]
// The atomic fetch-and-add of the mesh's round-robin counters.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod allow;
mod clientip;
mod closing;
mod conntrack;
mod counters;
mod dns;
mod guard;
mod mesh;
mod pick;
mod reply;
mod segment;
mod tunnel;
mod vip;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: the helpers the data plane will need (redirects, FIB lookups) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
