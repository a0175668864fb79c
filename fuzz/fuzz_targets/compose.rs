//! The compose loader end to end, as `shoal stack deploy -c A -c B -c C`
//! runs it: up to three files (the input split at NUL bytes) parsed with
//! their bounds, interpolated from a fixed environment, merged, settled
//! and converted to service specs, then printed as `stack config` prints.
//! Any panic, hang or runaway allocation is a finding; errors must say
//! something.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use shoal_cli::compose::{self, Options, Source, convert};

fn env(name: &str) -> Option<String> {
    match name {
        "TAG" => Some("2".into()),
        "REPLICAS" => Some("3".into()),
        "PORT" => Some("8080".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let skip_interpolation = data.first().is_some_and(|b| *b == b'!');
    let sources: Vec<Source> = data
        .split(|b| *b == 0)
        .take(3)
        .enumerate()
        .map(|(i, text)| Source {
            name: PathBuf::from(format!("/fuzz/file{i}.yml")),
            text: String::from_utf8_lossy(text).into_owned(),
        })
        .collect();
    let options = Options { skip_interpolation };
    // Relative env files and secrets point nowhere: the fuzzer's paths
    // read nothing of this machine but what it names absolutely.
    let project = match compose::load_sources(sources, PathBuf::from("/nonexistent"), &env, options)
    {
        Ok(project) => project,
        Err(error) => {
            assert!(
                !error.message.is_empty(),
                "an error that says nothing: {error:?}"
            );
            return;
        }
    };
    let printed = project.to_yaml();
    assert!(!printed.is_empty());
    if let Err(error) = convert::convert(&project, "fz") {
        assert!(
            !error.message.is_empty(),
            "an error that says nothing: {error:?}"
        );
    }
});
