//! Compiles `agent-ebpf` for the BPF target (nightly, `-Z build-std=core`, via
//! `rustup run nightly`) and leaves the object in OUT_DIR, where `src/datapath`
//! embeds it with `include_bytes_aligned!`. `cargo xtask setup` installs what
//! this needs (the nightly rust-src component and bpf-linker).
fn main() -> anyhow::Result<()> {
    // aya-build already reruns us when agent-ebpf changes; the shared types live apart.
    println!("cargo:rerun-if-changed=../agent-common/src");
    let ebpf = aya_build::Package {
        name: "shoal-agent-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
