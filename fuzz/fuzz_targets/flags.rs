//! Every parser of text a user types: join tokens, `--publish`,
//! `--mount`, `--env`, `--network`, `--secret`, `--config`, `--label`,
//! sizes, CPUs, durations, allow-lists, `--endpoint-affinity`, mount
//! options, base64, ids and file owners. The first byte picks the parser,
//! the rest is its text. None may panic; those with a printed form must
//! read back what they print.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_api::{base64, file_target, id, mount, token::JoinToken};
use shoal_cli::commands::{service::lb_flags, service_flags as flags};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 20 {
        0 => {
            if let Ok(token) = JoinToken::parse(text) {
                assert_eq!(JoinToken::parse(&token.to_string()), Ok(token));
            }
        }
        1 => {
            if let Ok(port) = flags::parse_publish(text) {
                assert!(
                    port.target_port <= 65535 && port.published_port <= 65535,
                    "{port:?}"
                );
            }
        }
        2 => drop(flags::parse_mount(text)),
        3 => drop(flags::parse_env(text)),
        4 => drop(flags::parse_network(text)),
        5 => drop(flags::parse_secret(text)),
        6 => drop(flags::parse_config(text)),
        7 => drop(flags::parse_label(text)),
        8 => {
            if let Ok(bytes) = flags::parse_bytes(text) {
                assert!(bytes >= 0, "{text:?} is {bytes} bytes");
            }
        }
        9 => drop(flags::parse_cpus(text)),
        10 => drop(flags::parse_duration(text)),
        11 => drop(flags::duration_ms(text)),
        12 => drop(flags::parse_allow(text, "--publish")),
        13 => drop(lb_flags::parse_affinity(text)),
        14 => drop(mount::parse_size(text)),
        15 => drop(mount::parse_mode(text)),
        16 => {
            let (key, value) = text.split_once('=').unwrap_or((text, ""));
            for kind in ["bind", "volume", "tmpfs"] {
                drop(mount::check_option(kind, key, value));
            }
        }
        17 => {
            if let Ok(bytes) = base64::decode(text) {
                assert_eq!(base64::decode(&base64::encode(&bytes)).ok(), Some(bytes));
            }
        }
        18 => drop(id::check("node", text)),
        _ => drop(file_target::owner_id(text)),
    }
});
