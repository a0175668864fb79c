//! The owner and mode of a secret's or config's file in a container
//! (`FileTarget`), read one way by the manager, which refuses a bad one
//! when the service is created or updated, and by the agent, which writes
//! the file: numbers only, as the agent writes the file before the
//! container's `/etc/passwd` could be read (Docker takes numbers too).

/// Mode of a file given none (Docker's default).
pub const DEFAULT_MODE: u32 = 0o444;
/// Permission bits, setuid/setgid/sticky included; nothing past them.
pub const MAX_MODE: u32 = 0o7777;

/// A uid or gid: empty means 0 (root, Docker's default); otherwise
/// decimal digits naming an id below 4294967295 (which `chown` reads as
/// "leave unchanged").
pub fn owner_id(text: &str) -> Result<u32, &'static str> {
    if text.is_empty() {
        return Ok(0);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a number is expected (user and group names are not looked up)");
    }
    match text.parse::<u32>() {
        Ok(id) if id != u32::MAX => Ok(id),
        _ => Err("out of range (at most 4294967294)"),
    }
}

/// The file's mode: 0 means [`DEFAULT_MODE`]; past [`MAX_MODE`] is refused.
pub fn mode(mode: u32) -> Result<u32, &'static str> {
    match mode {
        0 => Ok(DEFAULT_MODE),
        m if m > MAX_MODE => Err("expected permission bits such as 0444"),
        m => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_numbers_and_empty_is_root() {
        assert_eq!(owner_id(""), Ok(0));
        assert_eq!(owner_id("0"), Ok(0));
        assert_eq!(owner_id("1000"), Ok(1000));
        assert_eq!(owner_id("4294967294"), Ok(4_294_967_294));
        for bad in ["root", "+5", "-1", " 1", "1.0", "0x10", "１"] {
            assert!(owner_id(bad).unwrap_err().contains("a number"), "{bad:?}");
        }
        for big in ["4294967295", "99999999999"] {
            assert!(owner_id(big).unwrap_err().contains("out of range"), "{big}");
        }
    }

    #[test]
    fn modes_are_permission_bits() {
        assert_eq!(mode(0), Ok(0o444));
        assert_eq!(mode(0o400), Ok(0o400));
        assert_eq!(mode(0o7777), Ok(0o7777));
        assert!(mode(0o10000).is_err());
        assert!(mode(0o100_644).is_err());
    }
}
