//! The data plane's programs loaded but attached to no interface, to run
//! packets through them with `BPF_PROG_TEST_RUN` (the fuzz target
//! `fuzz/fuzz_targets/ebpf.rs`): the very object the agent attaches, with
//! its maps pinned under a [`BpfRoot`] of the caller's, so that the
//! agent's own map wrappers ([`super::mesh::MeshMaps`] …) fill them.

use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions, programs::SchedClassifier};
use shoal_agent_common::names;

use super::{BpfRoot, DatapathError, EBPF_OBJECT};

/// Every TC program of the object.
pub const PROGRAMS: [&str; 6] = [
    names::COUNT_INGRESS,
    names::COUNT_EGRESS,
    names::MESH_INGRESS,
    names::MESH_REPLY,
    names::VIP_OUT,
    names::VIP_IN,
];

/// The object, its maps created (or reused) under a root's pins, and every
/// program in [`PROGRAMS`] loaded into the kernel.
pub struct Unattached {
    ebpf: Ebpf,
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    /// The program's return value: a TC verdict.
    pub verdict: i32,
    /// Bytes of the packet as the program left it (in the output buffer).
    pub len: usize,
}

impl Unattached {
    pub fn load(root: &BpfRoot) -> Result<Self, DatapathError> {
        root.prepare()?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(root.maps_dir())
            .load(EBPF_OBJECT)?;
        for name in PROGRAMS {
            super::loader::loaded_classifier(&mut ebpf, name)?;
        }
        Ok(Self { ebpf })
    }

    /// Runs `packet` (an Ethernet frame) once through `program`; `out`
    /// receives the packet as the program left it, and must have room for
    /// what the program may add (VXLAN headers).
    pub fn run(
        &self,
        program: &'static str,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<RunResult, DatapathError> {
        let program_error = |source| DatapathError::Program {
            name: program,
            source,
        };
        let classifier: &SchedClassifier = self
            .ebpf
            .program(program)
            .ok_or(DatapathError::Program {
                name: program,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(program_error)?;
        let result = classifier
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(out),
                ..Default::default()
            })
            .map_err(program_error)?;
        Ok(RunResult {
            // TC verdicts are ints (TC_NEXT is -1); the kernel hands back their bits.
            verdict: result.return_value as i32,
            len: result.data_size_out as usize,
        })
    }

    /// The loaded object, for reading its maps.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}
